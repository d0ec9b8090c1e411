package licensd

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"

	"google.golang.org/protobuf/encoding/protojson"

	licensingv1 "licensd.dev/client/gen/licensd/licensing/v1"
)

// Why a signed answer, checkpoint or proof does not verify.
var (
	ErrUnknownKey       = errors.New("licensd: signed by a key that is not among the given keys")
	ErrBadSignature     = errors.New("licensd: the signature does not verify")
	ErrNonceMismatch    = errors.New("licensd: the answer does not echo the nonce sent (a replayed answer?)")
	ErrScopeMismatch    = errors.New("licensd: the answer's signed scope is not the request's (another machine's or user's answer?)")
	ErrMalformed        = errors.New("licensd: malformed signed data")
	ErrProofInvalid     = errors.New("licensd: the proof does not verify")
	ErrCheckpointTenant = errors.New("licensd: checkpoints of different tenants")
)

// VerifyValidationResponse checks a ValidateLicense answer received over gRPC: Ed25519
// (key resp.Kid) over the RFC 8785 canonical JSON of its proto3 JSON form without kid and
// signature. nonce is the one sent with the request: the answer must echo it, so a
// recorded answer replayed later fails; "" skips that check (only for requests sent
// without one).
//
// The answer is re-encoded from the generated code, which must know every field of it:
// an answer with fields newer than this module fails to verify (docs/formats.md).
func VerifyValidationResponse(resp *licensingv1.ValidateLicenseResponse, keys Keys, nonce string) error {
	text, err := protojson.Marshal(resp)
	if err != nil {
		return ErrMalformed
	}
	return VerifyValidationJSON(text, keys, nonce)
}

// VerifyValidationJSON is VerifyValidationResponse for an answer as Connect JSON (the body
// of a POST to /licensd.licensing.v1.LicensingService/ValidateLicense). It needs no
// schema, so fields added in later licensd versions verify too.
func VerifyValidationJSON(body []byte, keys Keys, nonce string) error {
	var answer map[string]interface{}
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if d.Decode(&answer) != nil || answer == nil {
		return ErrMalformed
	}
	if got, _ := answer["nonce"].(string); nonce != "" && got != nonce {
		return ErrNonceMismatch
	}
	kid, _ := answer["kid"].(string)
	key, ok := keys[kid]
	if !ok {
		return ErrUnknownKey
	}
	sig64, _ := answer["signature"].(string)
	signature, err := base64.StdEncoding.DecodeString(sig64)
	if err != nil {
		// proto3 JSON readers accept either base64 alphabet.
		if signature, err = base64.URLEncoding.DecodeString(sig64); err != nil {
			return ErrMalformed
		}
	}
	delete(answer, "kid")
	delete(answer, "signature")
	unsigned, err := json.Marshal(answer)
	if err != nil {
		return ErrMalformed
	}
	signed, err := canonicalJSON(unsigned)
	if err != nil {
		return ErrMalformed
	}
	if len(key) != ed25519.PublicKeySize || len(signature) != ed25519.SignatureSize || !ed25519.Verify(key, signed, signature) {
		return ErrBadSignature
	}
	return nil
}

// CheckValidationScope checks that a verified answer judged the scope req asked: its signed
// scope (product code, fingerprint, user, entitlements, components) must equal the request's, or the
// error is ErrScopeMismatch. Call it after VerifyValidationResponse (Client.Validate does
// both). Servers from this version on echo the scope.
func CheckValidationScope(resp *licensingv1.ValidateLicenseResponse, req *licensingv1.ValidateLicenseRequest) error {
	s := resp.GetScope()
	if s.GetProductCode() != req.GetProductCode() || s.GetFingerprint() != req.GetFingerprint() ||
		s.GetUser() != req.GetUser() || len(s.GetEntitlements()) != len(req.GetEntitlements()) {
		return ErrScopeMismatch
	}
	for i, e := range req.GetEntitlements() {
		if s.GetEntitlements()[i] != e {
			return ErrScopeMismatch
		}
	}
	// Components: the same set (the answer lists them by name; names are unique in a request).
	if len(s.GetComponents()) != len(req.GetComponents()) {
		return ErrScopeMismatch
	}
	echoed := make(map[string]string, len(s.GetComponents()))
	for _, c := range s.GetComponents() {
		echoed[c.GetName()] = c.GetFingerprint()
	}
	for _, c := range req.GetComponents() {
		if fp, ok := echoed[c.GetName()]; !ok || fp != c.GetFingerprint() {
			return ErrScopeMismatch
		}
	}
	return nil
}
