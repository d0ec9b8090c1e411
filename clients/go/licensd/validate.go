package licensd

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	licensingv1 "licensd.dev/client/gen/licensd/licensing/v1"
)

// Validate calls LicensingService.ValidateLicense with a fresh random nonce (unless req
// has one) and verifies the signed answer against the published signing keys, so the
// answer can be trusted even through a proxy or cache: a forged, altered or replayed
// answer is an error wrapping ErrBadSignature, ErrUnknownKey or ErrNonceMismatch, and one
// judged for another scope (fingerprint, user, product, entitlements) wraps ErrScopeMismatch.
//
// A license that is not valid is a normal answer (Valid false, Code says why), not an
// error. ValidateLicense is public: the license key is the credential.
func (c *Client) Validate(ctx context.Context, req *licensingv1.ValidateLicenseRequest) (*licensingv1.ValidateLicenseResponse, error) {
	req = proto.Clone(req).(*licensingv1.ValidateLicenseRequest)
	if req.Nonce == "" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		req.Nonce = base64.RawURLEncoding.EncodeToString(b)
	}
	resp, err := c.Licensing.ValidateLicense(ctx, req)
	if err != nil {
		return nil, err
	}
	keys, err := c.SigningKeys.KeysFor(ctx, resp.GetKid())
	if keys == nil {
		return nil, fmt.Errorf("licensd: fetching signing keys to verify the answer: %w", err)
	}
	err = VerifyValidationResponse(resp, keys, req.Nonce)
	if err == nil {
		err = CheckValidationScope(resp, req)
	}
	if err != nil {
		return nil, &Error{
			Code: codes.DataLoss, Message: err.Error(), Reason: "ANSWER_NOT_VERIFIED", Metadata: map[string]string{"kid": resp.GetKid()},
			status: status.New(codes.DataLoss, err.Error()), cause: err,
		}
	}
	return resp, nil
}
