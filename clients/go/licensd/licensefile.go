package licensd

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Verdicts of VerifyLicenseFile and VerifyLease (docs/formats.md, "Verifying").
const (
	CodeValid               = "VALID"
	CodeMalformed           = "MALFORMED"
	CodeDecryptionFailed    = "DECRYPTION_FAILED"
	CodeHMACNotAllowed      = "HMAC_NOT_ALLOWED"
	CodeUnknownKey          = "UNKNOWN_KEY"
	CodeBadSignature        = "BAD_SIGNATURE"
	CodeExpired             = "EXPIRED"
	CodeFingerprintMismatch = "FINGERPRINT_MISMATCH"
)

const (
	prefixEd25519   = "licensd1"
	prefixHMAC      = "licensd1h"
	prefixEncrypted = "licensd1e"
)

// Keys maps a kid (sk_…) to its raw Ed25519 public key, as GetSigningKeys publishes them.
type Keys map[string]ed25519.PublicKey

// LicenseFileOptions is what a license-file verifier may know.
type LicenseFileOptions struct {
	Keys       Keys   // the published Ed25519 keys
	HMACSecret string // the shared secret, for licensd1h. files
	// AllowHMAC accepts licensd1h. files even when Keys is set (off by default: a leaked
	// shared secret must not be able to mint files where Ed25519 is expected).
	AllowHMAC   bool
	LicenseKey  string    // opens licensd1e. files; as the customer typed it
	Fingerprint string    // this machine; a file bound to a machine needs it
	Now         time.Time // zero: time.Now()
}

// Claims is the payload of a license file or lease. Entitlement values are a bool (flag),
// a float64 (limit) or a tier string ("basic" … "enterprise").
type Claims struct {
	V            int    `json:"v"`
	Typ          string `json:"typ,omitempty"`
	LicenseID    string `json:"license_id"`
	TenantID     string `json:"tenant_id"`
	MachineID    string `json:"machine_id,omitempty"`
	Fingerprint  string `json:"fingerprint,omitempty"`
	Status       string `json:"status,omitempty"` // leases: "active", or "expired" in a grace period
	Product      struct{ Code, Name string }
	Customer     struct{ Name, Email, Organization string }
	Plan         string                 `json:"plan"`
	Features     []string               `json:"features"`
	Entitlements map[string]interface{} `json:"entitlements"`
	Agents       map[string]AgentClaims `json:"agents"`
	MaxMachines  int                    `json:"max_machines"`
	MaxUsers     int                    `json:"max_users"`
	IssuedAt     time.Time              `json:"-"`
	ExpiresAt    *time.Time             `json:"-"` // nil: perpetual
	Offline      bool                   `json:"offline,omitempty"`
	Kid          string                 `json:"kid"`
}

// AgentClaims is an AI agent's resolved allowance.
type AgentClaims struct {
	Enabled    bool    `json:"enabled"`
	TokenLimit int64   `json:"token_limit"` // 0: no limit
	ModelTier  *string `json:"model_tier"`
}

// FileResult is a verifier's answer: never an error, the code says why.
type FileResult struct {
	Valid bool
	Code  string
	// Claims is the payload whenever it could be read (also for most failures, e.g.
	// EXPIRED), nil otherwise. Trust it only when Valid.
	Claims *Claims
	// Payload is the same payload as generic JSON, for members Claims does not name.
	Payload map[string]interface{}
}

// HasFeature reports whether a valid file grants feature.
func (r FileResult) HasFeature(feature string) bool {
	if !r.Valid || r.Claims == nil {
		return false
	}
	for _, f := range r.Claims.Features {
		if f == feature {
			return true
		}
	}
	return false
}

// VerifyLicenseFile checks a license file (licensd1., licensd1h. or licensd1e.) as
// docs/formats.md specifies: envelope, signature or MAC, expiry (an unreadable expiry
// counts as past) and machine binding. A lease is not a license file: MALFORMED.
func VerifyLicenseFile(file string, o LicenseFileOptions) FileResult {
	r := verifyEnvelope(file, o)
	if r.Payload != nil {
		if _, isLease := r.Payload["typ"]; isLease {
			return FileResult{Code: CodeMalformed, Claims: r.Claims, Payload: r.Payload}
		}
	}
	return r
}

// VerifyLease checks an activation lease (Activate, Heartbeat, ConnectLease,
// ValidateLicense's lease, or an air-gapped response file) for this machine.
func VerifyLease(token string, keys Keys, fingerprint string, now time.Time) FileResult {
	r := verifyEnvelope(token, LicenseFileOptions{Keys: keys, Fingerprint: fingerprint, Now: now})
	if r.Payload != nil && r.Payload["typ"] != "lease" {
		return FileResult{Code: CodeMalformed, Claims: r.Claims, Payload: r.Payload}
	}
	return r
}

func verifyEnvelope(file string, o LicenseFileOptions) FileResult {
	text := strings.TrimSpace(file)
	if strings.HasPrefix(text, prefixEncrypted+".") {
		plain, ok := decryptLicenseFile(text, o.LicenseKey)
		if !ok {
			return FileResult{Code: CodeDecryptionFailed}
		}
		text = plain
	}
	parts := strings.Split(text, ".")
	if len(parts) != 3 || (parts[0] != prefixEd25519 && parts[0] != prefixHMAC) {
		return FileResult{Code: CodeMalformed}
	}
	raw, err1 := b64url(parts[1])
	signature, err2 := b64url(parts[2])
	if err1 != nil || err2 != nil || !utf8.Valid(raw) {
		return FileResult{Code: CodeMalformed}
	}
	var payload map[string]interface{}
	if json.Unmarshal(raw, &payload) != nil || payload == nil {
		return FileResult{Code: CodeMalformed}
	}
	if v, ok := payload["v"].(float64); !ok || v != 1 {
		return FileResult{Code: CodeMalformed}
	}
	if _, ok := payload["kid"].(string); !ok {
		return FileResult{Code: CodeMalformed}
	}
	if _, ok := payload["features"].([]interface{}); !ok {
		return FileResult{Code: CodeMalformed}
	}
	fail := func(code string) FileResult {
		return FileResult{Code: code, Claims: claimsOf(raw, payload), Payload: payload}
	}
	signed := []byte(parts[0] + "." + parts[1])
	if parts[0] == prefixHMAC {
		if len(o.Keys) > 0 && !o.AllowHMAC {
			return fail(CodeHMACNotAllowed)
		}
		if o.HMACSecret == "" {
			return fail(CodeUnknownKey)
		}
		mac := hmac.New(sha256.New, []byte(o.HMACSecret))
		mac.Write(signed)
		if !hmac.Equal(mac.Sum(nil), signature) {
			return fail(CodeBadSignature)
		}
	} else {
		key, ok := o.Keys[payload["kid"].(string)]
		if !ok {
			return fail(CodeUnknownKey)
		}
		if len(key) != ed25519.PublicKeySize || len(signature) != ed25519.SignatureSize || !ed25519.Verify(key, signed, signature) {
			return fail(CodeBadSignature)
		}
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	if exp, present := payload["expires_at"]; present && exp != nil {
		s, _ := exp.(string)
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || !t.After(now) {
			return fail(CodeExpired)
		}
	}
	if fp, bound := payload["fingerprint"]; bound && (o.Fingerprint == "" || fp != o.Fingerprint) {
		return fail(CodeFingerprintMismatch)
	}
	return FileResult{Valid: true, Code: CodeValid, Claims: claimsOf(raw, payload), Payload: payload}
}

// claimsOf reads the typed view of a payload, leniently: a member of an unexpected type
// is left at its zero value (the checks above already ran on the generic form).
func claimsOf(raw []byte, payload map[string]interface{}) *Claims {
	var c Claims
	_ = json.Unmarshal(raw, &c)
	if s, ok := payload["issued_at"].(string); ok {
		c.IssuedAt, _ = time.Parse(time.RFC3339Nano, s)
	}
	if s, ok := payload["expires_at"].(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			c.ExpiresAt = &t
		}
	}
	return &c
}

// decryptLicenseFile opens licensd1e.<iv>.<ciphertext‖tag> with the license key.
func decryptLicenseFile(text, licenseKey string) (string, bool) {
	parts := strings.Split(text, ".")
	if licenseKey == "" || len(parts) != 3 {
		return "", false
	}
	iv, err1 := b64url(parts[1])
	sealed, err2 := b64url(parts[2])
	if err1 != nil || err2 != nil || len(iv) != 12 {
		return "", false
	}
	key := hkdfSHA256([]byte(NormalizeLicenseKey(licenseKey)), []byte(prefixEncrypted), []byte("license file"), 32)
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	plain, err := gcm.Open(nil, iv, sealed, []byte(prefixEncrypted))
	if err != nil || !utf8.Valid(plain) {
		return "", false
	}
	return string(plain), true
}

var vinzyKey = regexp.MustCompile(`^[A-Z0-9]{3}(-[A-Z2-7]{5}){7}$`)

// NormalizeLicenseKey is a license key as licensd looks it up: surrounding white space
// removed (as JavaScript's trim does), and Vinzy-format keys upper-cased (they are
// case-insensitive); other keys are case-sensitive and kept as they are.
func NormalizeLicenseKey(key string) string {
	trimmed := strings.TrimFunc(key, func(r rune) bool {
		return r == '\uFEFF' || (unicode.IsSpace(r) && r != '\u0085')
	})
	if upper := strings.ToUpper(trimmed); vinzyKey.MatchString(upper) {
		return upper
	}
	return trimmed
}

// hkdfSHA256 is RFC 5869 HKDF with SHA-256 (length ≤ 255·32).
func hkdfSHA256(ikm, salt, info []byte, length int) []byte {
	if len(salt) == 0 {
		salt = make([]byte, sha256.Size)
	}
	extract := hmac.New(sha256.New, salt)
	extract.Write(ikm)
	prk := extract.Sum(nil)
	var out, t []byte
	for i := byte(1); len(out) < length; i++ {
		expand := hmac.New(sha256.New, prk)
		expand.Write(t)
		expand.Write(info)
		expand.Write([]byte{i})
		t = expand.Sum(nil)
		out = append(out, t...)
	}
	return out[:length]
}

// b64url decodes base64url with or without padding.
func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
