package licensd

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"
	"unicode/utf8"
)

const prefixRequest = "licensd-req1"

// OfflineActivation describes an air-gapped machine asking to be activated.
type OfflineActivation struct {
	LicenseKey  string // as the customer typed it; it never leaves the machine (only its digest)
	Fingerprint string // 1 to 255 characters
	Hostname    string
	Platform    string
	Cores       int
	Now         time.Time // zero: time.Now()
}

// offlineRequest is the request JSON, members in the order licensd writes them.
type offlineRequest struct {
	V           int    `json:"v"`
	Typ         string `json:"typ"`
	KeyDigest   string `json:"key_digest"`
	Fingerprint string `json:"fingerprint"`
	Hostname    string `json:"hostname"`
	Platform    string `json:"platform"`
	Cores       int    `json:"cores"`
	CreatedAt   string `json:"created_at"`
	Nonce       string `json:"nonce"`
}

// NewOfflineActivationRequest writes the content of a request file
// (licensd-req1.<request JSON>.<HMAC with the license key>, docs/formats.md). Someone
// carries it to the vendor, who answers with ActivationService.ActivateOffline; the
// response file is an offline lease: check it with VerifyLease.
func NewOfflineActivationRequest(a OfflineActivation) (string, error) {
	nonce := make([]byte, 12)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return offlineActivationRequest(a, base64.RawURLEncoding.EncodeToString(nonce))
}

func offlineActivationRequest(a OfflineActivation, nonce string) (string, error) {
	if n := utf8.RuneCountInString(a.Fingerprint); n < 1 || n > 255 {
		return "", errors.New("licensd: fingerprint must be 1 to 255 characters")
	}
	now := a.Now
	if now.IsZero() {
		now = time.Now()
	}
	key := NormalizeLicenseKey(a.LicenseKey)
	digest := sha256.Sum256([]byte(key))
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false) // JSON.stringify writes <, > and & as they are
	if err := enc.Encode(offlineRequest{
		V: 1, Typ: "activation_request", KeyDigest: base64.RawURLEncoding.EncodeToString(digest[:]),
		Fingerprint: a.Fingerprint, Hostname: a.Hostname, Platform: a.Platform, Cores: a.Cores,
		CreatedAt: now.UTC().Format("2006-01-02T15:04:05.000Z"), Nonce: nonce,
	}); err != nil {
		return "", err
	}
	signed := prefixRequest + "." + base64.RawURLEncoding.EncodeToString(bytes.TrimSuffix(body.Bytes(), []byte("\n")))
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)), nil
}

// CheckOfflineActivationRequest is the vendor's check of a request file against the
// license key: VALID, BAD_MAC (another license's key, or the file was changed) or MALFORMED.
func CheckOfflineActivationRequest(text, licenseKey string) string {
	parts := strings.Split(strings.TrimSpace(text), ".")
	if len(parts) != 3 || parts[0] != prefixRequest {
		return CodeMalformed
	}
	raw, err1 := b64url(parts[1])
	mac, err2 := b64url(parts[2])
	var req map[string]interface{}
	if err1 != nil || err2 != nil || json.Unmarshal(raw, &req) != nil {
		return CodeMalformed
	}
	_, digestOK := req["key_digest"].(string)
	_, fpOK := req["fingerprint"].(string)
	if v, ok := req["v"].(float64); !ok || v != 1 || req["typ"] != "activation_request" || !digestOK || !fpOK {
		return CodeMalformed
	}
	expected := hmac.New(sha256.New, []byte(NormalizeLicenseKey(licenseKey)))
	expected.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(expected.Sum(nil), mac) {
		return "BAD_MAC"
	}
	return CodeValid
}
