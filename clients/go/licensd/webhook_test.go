package licensd

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// webhookReasons names VerifyWebhook's errors as docs/test-vectors.json does.
var webhookReasons = map[error]string{
	ErrWebhookMissingHeaders: "MISSING_HEADERS",
	ErrWebhookBadSecret:      "BAD_SECRET",
	ErrWebhookMalformed:      "MALFORMED",
	ErrWebhookTimestamp:      "TIMESTAMP_OUT_OF_TOLERANCE",
	ErrWebhookBadSignature:   "BAD_SIGNATURE",
}

func webhookOutcome(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return "OK"
	}
	for e, reason := range webhookReasons {
		if errors.Is(err, e) {
			return reason
		}
	}
	t.Fatalf("not a webhook refusal: %v", err)
	return ""
}

func TestVectorsWebhooks(t *testing.T) {
	raw := loadVectors(t).Webhooks
	var section struct {
		Cases []struct {
			Name, Secret, Payload, Expect string
			Headers                       map[string]string
			Now                           int64
		}
	}
	if err := json.Unmarshal(raw, &section); err != nil {
		t.Fatal(err)
	}
	if len(section.Cases) < 10 {
		t.Fatalf("only %d webhook cases", len(section.Cases))
	}
	for _, c := range section.Cases {
		h := http.Header{}
		for k, v := range c.Headers {
			h.Set(k, v)
		}
		msg, err := VerifyWebhook([]byte(c.Payload), h, c.Secret, time.Unix(c.Now, 0))
		if got := webhookOutcome(t, err); got != c.Expect {
			t.Errorf("%s: got %s, want %s (%v)", c.Name, got, c.Expect, err)
			continue
		}
		if msg != nil && (msg.ID != c.Headers["webhook-id"] ||
			strconv.FormatInt(msg.Timestamp.Unix(), 10) != c.Headers["webhook-timestamp"] ||
			string(msg.Event) != c.Payload) {
			t.Errorf("%s: message %+v", c.Name, msg)
		}
	}
}

func newWebhookSecret(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

func signedWebhook(t *testing.T, body string, at time.Time, secrets ...string) http.Header {
	ts := strconv.FormatInt(at.Unix(), 10)
	h := http.Header{}
	h.Set("Webhook-Id", "evt_test")
	h.Set("Webhook-Timestamp", ts)
	for _, s := range secrets {
		key, err := WebhookSecretKey(s)
		if err != nil {
			t.Fatal(err)
		}
		h.Add("Webhook-Signature", "v1,"+base64.StdEncoding.EncodeToString(WebhookSignature(key, "evt_test", ts, []byte(body))))
	}
	return h
}

func TestVerifyWebhook(t *testing.T) {
	body := `{"type":"license.created","timestamp":"2027-01-01T00:00:00Z","data":{"id":"lic_1 ✓"}}`
	at := time.Unix(1_798_761_600, 0)
	old, current := newWebhookSecret(t), newWebhookSecret(t)
	rotating := signedWebhook(t, body, at, old, current) // two webhook-signature headers
	with := func(name, value string) http.Header {
		h := signedWebhook(t, body, at, current)
		h.Set(name, value)
		return h
	}
	cases := []struct {
		name, body, secret string
		headers            http.Header
		now                time.Time
		want               string
	}{
		{"valid", body, current, signedWebhook(t, body, at, current), at, "OK"},
		{"rotation, old secret", body, old, rotating, at, "OK"},
		{"rotation, current secret", body, current, rotating, at.Add(5 * time.Minute), "OK"},
		{"another secret", body, newWebhookSecret(t), rotating, at, "BAD_SIGNATURE"},
		{"body tampered", body + " ", current, rotating, at, "BAD_SIGNATURE"},
		{"id tampered", body, current, with("webhook-id", "evt_other"), at, "BAD_SIGNATURE"},
		{"timestamp tampered", body, current, with("webhook-timestamp", "1798761601"), at, "BAD_SIGNATURE"},
		{"junk signatures", body, current, with("webhook-signature", "junk v1,@@@ v1"), at, "BAD_SIGNATURE"},
		{"expired", body, current, rotating, at.Add(301 * time.Second), "TIMESTAMP_OUT_OF_TOLERANCE"},
		{"future", body, current, rotating, at.Add(-301 * time.Second), "TIMESTAMP_OUT_OF_TOLERANCE"},
		{"default clock", body, current, rotating, time.Time{}, "TIMESTAMP_OUT_OF_TOLERANCE"},
		{"no headers", body, current, http.Header{}, at, "MISSING_HEADERS"},
		{"no whsec_", body, current[6:], rotating, at, "BAD_SECRET"},
		{"empty key", body, "whsec_", rotating, at, "BAD_SECRET"},
		{"timestamp not seconds", body, current, with("webhook-timestamp", "-5"), at, "MALFORMED"},
		{"not JSON", "nope", current, signedWebhook(t, "nope", at, current), at, "MALFORMED"},
	}
	for _, c := range cases {
		_, err := VerifyWebhook([]byte(c.body), c.headers, c.secret, c.now)
		if got := webhookOutcome(t, err); got != c.want {
			t.Errorf("%s: got %s, want %s (%v)", c.name, got, c.want, err)
		}
	}
	if _, err := VerifyWebhookWithin([]byte(body), rotating, current, at.Add(2*time.Minute), time.Minute); !errors.Is(
		err, ErrWebhookTimestamp) {
		t.Errorf("tolerance of a minute: %v", err)
	}
}
