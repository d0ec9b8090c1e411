package licensd

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	licensingv1 "licensd.dev/client/gen/licensd/licensing/v1"
)

func statusError(t *testing.T, code codes.Code, reason string, metadata map[string]string, violations ...*errdetails.BadRequest_FieldViolation) error {
	t.Helper()
	st := status.New(code, "refused")
	var err error
	if len(violations) > 0 {
		st, err = st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: metadata}, &errdetails.BadRequest{FieldViolations: violations})
	} else {
		st, err = st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: metadata})
	}
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// attempts runs one call through the retry interceptor against an invoker that fails with
// errs in turn (then succeeds), and counts the attempts made.
func attempts(t *testing.T, method string, req interface{}, errs ...error) (int, error) {
	t.Helper()
	n := 0
	invoker := func(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		n++
		if n <= len(errs) {
			return errs[n-1]
		}
		return nil
	}
	policy := RetryPolicy{MaxAttempts: 4, InitialBackoff: time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := RetryInterceptor(policy)(ctx, method, req, nil, nil, invoker)
	return n, err
}

func TestRetriesReadsThatFailWithUnavailable(t *testing.T) {
	down := status.Error(codes.Unavailable, "connection refused")
	n, err := attempts(t, "/licensd.licensing.v1.LicensingService/GetLicense", &licensingv1.GetLicenseRequest{}, down, down)
	if err != nil || n != 3 {
		t.Fatalf("GetLicense (NO_SIDE_EFFECTS): %d attempts, %v", n, err)
	}
	n, err = attempts(t, "/licensd.licensing.v1.LicensingService/GetLicense", &licensingv1.GetLicenseRequest{}, down, down, down, down, down)
	if status.Code(err) != codes.Unavailable || n != 4 {
		t.Fatalf("gives up after MaxAttempts: %d attempts, %v", n, err)
	}
}

func TestNeverRetriesAMutationWithoutAnIdempotencyKey(t *testing.T) {
	down := status.Error(codes.Unavailable, "connection reset")
	n, err := attempts(t, "/licensd.licensing.v1.LicensingService/CreateLicense", &licensingv1.CreateLicenseRequest{PolicyId: "pol_1"}, down)
	if n != 1 || status.Code(err) != codes.Unavailable {
		t.Fatalf("CreateLicense without a key: %d attempts, %v", n, err)
	}
	n, err = attempts(t, "/licensd.licensing.v1.LicensingService/CreateLicense", &licensingv1.CreateLicenseRequest{PolicyId: "pol_1", IdempotencyKey: "order-42"}, down)
	if n != 2 || err != nil {
		t.Fatalf("CreateLicense with an idempotency key: %d attempts, %v", n, err)
	}
}

func TestRetryHonoursTheRateLimitDelayAndNotOtherErrors(t *testing.T) {
	limited := statusError(t, codes.ResourceExhausted, "RATE_LIMITED", map[string]string{"retry_delay_ms": "150"})
	start := time.Now()
	n, err := attempts(t, "/licensd.licensing.v1.LicensingService/ValidateLicense", &licensingv1.ValidateLicenseRequest{}, limited)
	if n != 2 || err != nil || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("rate limited: %d attempts in %v, %v", n, time.Since(start), err)
	}
	tooLarge := statusError(t, codes.ResourceExhausted, "MESSAGE_TOO_LARGE", nil)
	if n, _ := attempts(t, "/licensd.licensing.v1.LicensingService/ValidateLicense", &licensingv1.ValidateLicenseRequest{}, tooLarge); n != 1 {
		t.Fatalf("RESOURCE_EXHAUSTED without a delay was retried (%d attempts)", n)
	}
	bad := statusError(t, codes.InvalidArgument, "INVALID_ARGUMENT", map[string]string{"field": "key"})
	if n, _ := attempts(t, "/licensd.licensing.v1.LicensingService/ValidateLicense", &licensingv1.ValidateLicenseRequest{}, bad); n != 1 {
		t.Fatalf("INVALID_ARGUMENT was retried (%d attempts)", n)
	}
}

func TestErrorOfReadsErrorInfoAndBadRequest(t *testing.T) {
	err := statusError(t, codes.InvalidArgument, "INVALID_ARGUMENT", map[string]string{"field": "name", "rule": "string.min_len"},
		&errdetails.BadRequest_FieldViolation{Field: "name", Description: "value length must be at least 1 characters"},
		&errdetails.BadRequest_FieldViolation{Field: "features[0].name", Description: "value does not match regex pattern"})
	e := ErrorOf(err)
	if e.Code != codes.InvalidArgument || e.Reason != "INVALID_ARGUMENT" || e.Domain != ErrorDomain || e.Field() != "name" || e.Metadata["rule"] != "string.min_len" {
		t.Fatalf("%+v", e)
	}
	if len(e.FieldViolations) != 2 || e.FieldViolations[1].Field != "features[0].name" {
		t.Fatalf("violations %+v", e.FieldViolations)
	}
	var target *Error
	if !errors.As(wrapError(err), &target) || status.Code(wrapError(err)) != codes.InvalidArgument {
		t.Fatal("a wrapped error neither errors.As into *Error nor keeps its gRPC status")
	}
	if ErrorOf(nil) != nil || ErrorOf(context.DeadlineExceeded).Code != codes.DeadlineExceeded {
		t.Fatal("nil and context errors")
	}
}
