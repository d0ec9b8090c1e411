package licensd

// Receiving licensd's webhooks (docs/formats.md, "Webhook signatures"), as the Standard
// Webhooks specification (https://www.standardwebhooks.com) defines them:
//
//	webhook-id         the event id (stable across retries: deduplicate on it)
//	webhook-timestamp  Unix seconds when this attempt was signed
//	webhook-signature  space-separated "v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>"
//
// The key is the base64 after "whsec_" in the endpoint's secret. While a secret is
// rotated a delivery carries one signature per valid secret; any one that matches passes.
// Deliveries signed more than five minutes before or after now are refused (replays).

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// WebhookTolerance is Standard Webhooks' default: five minutes either way.
const WebhookTolerance = 5 * time.Minute

// The refusals of VerifyWebhook (errors.Is them); the other clients name them by the reason
// in parentheses.
var (
	// ErrWebhookMissingHeaders (MISSING_HEADERS): webhook-id, webhook-timestamp or webhook-signature is absent.
	ErrWebhookMissingHeaders = errors.New("licensd: webhook-id, webhook-timestamp and webhook-signature are required")
	// ErrWebhookBadSecret (BAD_SECRET): the secret is not "whsec_" followed by base64 key bytes.
	ErrWebhookBadSecret = errors.New("licensd: the webhook secret is not whsec_ followed by base64 key bytes")
	// ErrWebhookMalformed (MALFORMED): webhook-timestamp is not whole seconds, or the body is not JSON.
	ErrWebhookMalformed = errors.New("licensd: malformed webhook delivery")
	// ErrWebhookTimestamp (TIMESTAMP_OUT_OF_TOLERANCE): signed more than the tolerance before or after now.
	ErrWebhookTimestamp = errors.New("licensd: webhook timestamp out of tolerance")
	// ErrWebhookBadSignature (BAD_SIGNATURE): no v1 signature matches this secret and body.
	ErrWebhookBadSignature = errors.New("licensd: no webhook signature matches this secret and body")
)

// WebhookMessage is a verified delivery: its webhook-id (deduplicate on it), when it was
// signed, and the JSON body ({"type", "timestamp", "data"}) for json.Unmarshal.
type WebhookMessage struct {
	ID        string
	Timestamp time.Time
	Event     json.RawMessage
}

// WebhookSecretKey returns the key bytes of a "whsec_<base64>" secret.
func WebhookSecretKey(secret string) ([]byte, error) {
	if !strings.HasPrefix(secret, "whsec_") {
		return nil, ErrWebhookBadSecret
	}
	key, err := decodeBase64Loose(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || len(key) == 0 {
		return nil, ErrWebhookBadSecret
	}
	return key, nil
}

// WebhookSignature returns the v1 signature (raw HMAC-SHA256) of one delivery under one key.
func WebhookSignature(key []byte, id, timestamp string, body []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + timestamp + "."))
	mac.Write(body)
	return mac.Sum(nil)
}

// decodeBase64Loose decodes standard base64, padded or not.
func decodeBase64Loose(s string) ([]byte, error) {
	return base64.RawStdEncoding.Strict().DecodeString(strings.TrimRight(s, "="))
}

// VerifyWebhook checks one delivery with the default five-minute tolerance. payload is the
// raw request body exactly as received (re-serialized JSON does not verify), headers the
// request's headers, secret the endpoint's "whsec_..." secret, now the time to check
// against (the zero time: time.Now()). A refusal is one of the ErrWebhook... errors.
//
//	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
//	msg, err := licensd.VerifyWebhook(body, r.Header, secret, time.Time{})
func VerifyWebhook(payload []byte, headers http.Header, secret string, now time.Time) (*WebhookMessage, error) {
	return VerifyWebhookWithin(payload, headers, secret, now, WebhookTolerance)
}

// VerifyWebhookWithin is VerifyWebhook with another tolerance.
func VerifyWebhookWithin(
	payload []byte, headers http.Header, secret string, now time.Time, tolerance time.Duration,
) (*WebhookMessage, error) {
	id := strings.TrimSpace(headers.Get("webhook-id"))
	stamp := strings.TrimSpace(headers.Get("webhook-timestamp"))
	// Repeated webhook-signature headers count as one space-separated list.
	signatures := strings.TrimSpace(strings.Join(headers.Values("webhook-signature"), " "))
	if id == "" || stamp == "" || signatures == "" {
		return nil, ErrWebhookMissingHeaders
	}
	key, err := WebhookSecretKey(secret)
	if err != nil {
		return nil, err
	}
	if len(stamp) > 15 || strings.TrimLeft(stamp, "0123456789") != "" {
		return nil, ErrWebhookMalformed
	}
	seconds, err := strconv.ParseInt(stamp, 10, 64)
	if err != nil {
		return nil, ErrWebhookMalformed
	}
	if now.IsZero() {
		now = time.Now()
	}
	nowSeconds, tol := now.Unix(), int64(tolerance/time.Second)
	if seconds < nowSeconds-tol || seconds > nowSeconds+tol {
		return nil, ErrWebhookTimestamp
	}
	expected := WebhookSignature(key, id, stamp, payload)
	matched := false
	for _, entry := range strings.Split(signatures, " ") {
		version, value, ok := strings.Cut(entry, ",")
		// Other versions (v1a, ...) and junk are skipped: a signature we cannot check is no match.
		if !ok || version != "v1" {
			continue
		}
		given, err := decodeBase64Loose(value)
		if err != nil {
			continue
		}
		// Every candidate compared (no early exit), each in constant time.
		if hmac.Equal(given, expected) {
			matched = true
		}
	}
	if !matched {
		return nil, ErrWebhookBadSignature
	}
	if !utf8.Valid(payload) || !json.Valid(payload) {
		return nil, ErrWebhookMalformed
	}
	return &WebhookMessage{ID: id, Timestamp: time.Unix(seconds, 0).UTC(), Event: json.RawMessage(payload)}, nil
}
