package licensd

import (
	"context"
	"math/rand"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// RetryPolicy says how often and how patiently idempotent calls are retried.
type RetryPolicy struct {
	// MaxAttempts counts the first try: 1 means no retries.
	MaxAttempts int
	// InitialBackoff is the cap of the first wait; each further wait doubles the cap, up to
	// MaxBackoff. The wait itself is drawn uniformly below the cap ("full jitter"), so
	// clients that failed together do not come back together.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

// DefaultRetryPolicy: 4 attempts, waits capped at 100 ms, 200 ms, 400 ms (at most 5 s).
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 4, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}

// RetryInterceptor retries a unary call that failed with UNAVAILABLE, or RESOURCE_EXHAUSTED
// with a retry delay (licensd's rate limits), when the call is safe to repeat: its method
// is marked idempotency_level NO_SIDE_EFFECTS or IDEMPOTENT in the .proto (every read),
// or its request carries a non-empty idempotency_key (licensd then answers a repeat with
// the first result and changes nothing). Other mutations are never retried: a lost answer
// does not say whether the change was made. Retries stop when ctx ends.
//
// Client uses it on every call; it is exported for connections built by hand.
func RetryInterceptor(p RetryPolicy) grpc.UnaryClientInterceptor {
	if p.MaxAttempts < 1 {
		p.MaxAttempts = 1
	}
	return func(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		for attempt := 1; ; attempt++ {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if err == nil || attempt >= p.MaxAttempts {
				return err
			}
			wait, retryable := retryDelay(err, p, attempt)
			if !retryable || !safeToRepeat(method, req) {
				return err
			}
			if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
				return err
			}
			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return err
			case <-timer.C:
			}
		}
	}
}

// retryDelay is how long to wait before attempt+1, and whether err is worth retrying.
func retryDelay(err error, p RetryPolicy, attempt int) (time.Duration, bool) {
	e := ErrorOf(err)
	capped := p.InitialBackoff << (attempt - 1)
	if capped > p.MaxBackoff || capped <= 0 {
		capped = p.MaxBackoff
	}
	var wait time.Duration
	if capped > 0 {
		wait = time.Duration(rand.Int63n(int64(capped) + 1))
	}
	switch e.Code {
	case codes.Unavailable:
		return wait, true
	case codes.ResourceExhausted:
		// A rate limit says when a token is back; a message that is too large never is.
		ms, convErr := strconv.ParseInt(e.Metadata["retry_delay_ms"], 10, 64)
		if convErr != nil || ms < 0 {
			return 0, false
		}
		floor := time.Duration(ms) * time.Millisecond
		if floor > p.MaxBackoff {
			return 0, false
		}
		if wait < floor {
			wait = floor + time.Duration(rand.Int63n(int64(floor)/10+1))
		}
		return wait, true
	}
	return 0, false
}

var idempotentMethods sync.Map // full method name → bool

// safeToRepeat says whether sending req to method again cannot apply a change twice.
func safeToRepeat(method string, req interface{}) bool {
	if m, ok := req.(proto.Message); ok {
		r := m.ProtoReflect()
		if f := r.Descriptor().Fields().ByName("idempotency_key"); f != nil && f.Kind() == protoreflect.StringKind && r.Get(f).String() != "" {
			return true
		}
	}
	if v, ok := idempotentMethods.Load(method); ok {
		return v.(bool)
	}
	v := declaredIdempotent(method)
	idempotentMethods.Store(method, v)
	return v
}

// declaredIdempotent reads the method's idempotency_level from the registered descriptors
// ("/licensd.licensing.v1.LicensingService/GetLicense").
func declaredIdempotent(method string) bool {
	i := strings.LastIndex(method, "/")
	if i <= 0 {
		return false
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(strings.TrimPrefix(method[:i], "/")))
	if err != nil {
		return false
	}
	svc, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return false
	}
	m := svc.Methods().ByName(protoreflect.Name(method[i+1:]))
	if m == nil {
		return false
	}
	opts, ok := m.Options().(*descriptorpb.MethodOptions)
	if !ok {
		return false
	}
	level := opts.GetIdempotencyLevel()
	return level == descriptorpb.MethodOptions_NO_SIDE_EFFECTS || level == descriptorpb.MethodOptions_IDEMPOTENT
}
