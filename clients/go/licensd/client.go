package licensd

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	activationv1 "licensd.dev/client/gen/licensd/activation/v1"
	auditv1 "licensd.dev/client/gen/licensd/audit/v1"
	licensingv1 "licensd.dev/client/gen/licensd/licensing/v1"
	tenantv1 "licensd.dev/client/gen/licensd/tenant/v1"
	usagev1 "licensd.dev/client/gen/licensd/usage/v1"
	webhookv1 "licensd.dev/client/gen/licensd/webhook/v1"
)

// DefaultTimeout bounds a unary call (all its retries included) whose context has no
// deadline of its own.
const DefaultTimeout = 30 * time.Second

// Client reaches one licensd deployment over gRPC. Its service clients are the
// generated ones, on a connection that adds the API key, the default timeout and
// retries to every call and turns every error into an *Error.
type Client struct {
	Tenants    tenantv1.TenantServiceClient
	Licensing  licensingv1.LicensingServiceClient
	Activation activationv1.ActivationServiceClient
	Usage      usagev1.UsageServiceClient
	Audit      auditv1.AuditServiceClient
	Webhooks   webhookv1.WebhookServiceClient
	// SigningKeys holds the Ed25519 keys the offline verifiers need, fetched with
	// ActivationService.GetSigningKeys and cached.
	SigningKeys *SigningKeys

	conn *grpc.ClientConn // nil when the caller brought its own connection (New)
}

// Option configures Dial and New.
type Option func(*options)

type options struct {
	apiKey      string
	tls         *tls.Config
	insecure    bool
	timeout     time.Duration
	retry       RetryPolicy
	dialOptions []grpc.DialOption
	keysTTL     time.Duration
}

// WithAPIKey sends `Authorization: Bearer <key>` on every call: a tenant key (lsk_…) or
// the super-admin key. Public calls (ValidateLicense, Activate, GetSigningKeys, …) need none.
func WithAPIKey(key string) Option { return func(o *options) { o.apiKey = key } }

// WithTLS sets the TLS configuration (the default is TLS with the system's roots).
func WithTLS(config *tls.Config) Option { return func(o *options) { o.tls = config } }

// WithInsecure connects over plaintext HTTP/2 (h2c), e.g. to a licensd on loopback.
// The API key is then sent in clear: never use it across a network.
func WithInsecure() Option { return func(o *options) { o.insecure = true } }

// WithTimeout sets the deadline given to unary calls whose context has none
// (DefaultTimeout unless set; 0 leaves such calls unbounded). Streams get none.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithRetry replaces DefaultRetryPolicy; RetryPolicy{MaxAttempts: 1} turns retries off.
func WithRetry(p RetryPolicy) Option { return func(o *options) { o.retry = p } }

// WithDialOptions passes extra options to grpc.DialContext (Dial only).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithSigningKeysTTL sets how long fetched signing keys are trusted before they are
// fetched again (DefaultSigningKeysTTL unless set).
func WithSigningKeysTTL(d time.Duration) Option { return func(o *options) { o.keysTTL = d } }

func buildOptions(opts []Option) options {
	o := options{timeout: DefaultTimeout, retry: DefaultRetryPolicy, keysTTL: DefaultSigningKeysTTL}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Dial connects to licensd at target ("host:port", or any gRPC target such as
// "dns:///licensd.example.com:443"). The connection is made lazily, as grpc.DialContext
// does by default; ctx only bounds a blocking dial asked for with WithDialOptions.
func Dial(ctx context.Context, target string, opts ...Option) (*Client, error) {
	o := buildOptions(opts)
	var transport grpc.DialOption
	if o.insecure {
		transport = grpc.WithInsecure()
	} else {
		config := o.tls
		if config == nil {
			config = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		transport = grpc.WithTransportCredentials(credentials.NewTLS(config))
	}
	conn, err := grpc.DialContext(ctx, target, append([]grpc.DialOption{transport}, o.dialOptions...)...)
	if err != nil {
		return nil, err
	}
	c := newClient(conn, o, !o.insecure)
	c.conn = conn
	return c, nil
}

// New builds a Client over a connection the caller made (and closes). The options
// other than WithDialOptions, WithTLS and WithInsecure apply.
func New(conn grpc.ClientConnInterface, opts ...Option) *Client {
	return newClient(conn, buildOptions(opts), false)
}

func newClient(cc grpc.ClientConnInterface, o options, requireTLS bool) *Client {
	var callOptions []grpc.CallOption
	if o.apiKey != "" {
		callOptions = append(callOptions, grpc.PerRPCCredentials(apiKeyCredentials{key: o.apiKey, requireTLS: requireTLS}))
	}
	w := &clientConn{cc: cc, timeout: o.timeout, retry: RetryInterceptor(o.retry), callOptions: callOptions}
	c := &Client{
		Tenants:    tenantv1.NewTenantServiceClient(w),
		Licensing:  licensingv1.NewLicensingServiceClient(w),
		Activation: activationv1.NewActivationServiceClient(w),
		Usage:      usagev1.NewUsageServiceClient(w),
		Audit:      auditv1.NewAuditServiceClient(w),
		Webhooks:   webhookv1.NewWebhookServiceClient(w),
	}
	c.SigningKeys = NewSigningKeys(c.Activation, o.keysTTL)
	return c
}

// Close closes the connection Dial made; for a Client from New it does nothing.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// apiKeyCredentials is the API key as gRPC per-RPC credentials.
type apiKeyCredentials struct {
	key        string
	requireTLS bool
}

func (a apiKeyCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + a.key}, nil
}

// RequireTransportSecurity is false only for connections the caller chose to make in
// clear (WithInsecure, or its own connection given to New).
func (a apiKeyCredentials) RequireTransportSecurity() bool { return a.requireTLS }

// clientConn adds the client's behaviour to every call of the generated stubs, whatever
// connection they run on (one Dial made, or the caller's own given to New).
type clientConn struct {
	cc          grpc.ClientConnInterface
	timeout     time.Duration
	retry       grpc.UnaryClientInterceptor
	callOptions []grpc.CallOption
}

func (w *clientConn) Invoke(ctx context.Context, method string, args, reply interface{}, opts ...grpc.CallOption) error {
	if _, ok := ctx.Deadline(); !ok && w.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.timeout)
		defer cancel()
	}
	opts = append(append([]grpc.CallOption{}, w.callOptions...), opts...)
	invoke := func(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		return w.cc.Invoke(ctx, method, req, reply, opts...)
	}
	return wrapError(w.retry(ctx, method, args, reply, nil, invoke, opts...))
}

func (w *clientConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	opts = append(append([]grpc.CallOption{}, w.callOptions...), opts...)
	s, err := w.cc.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, wrapError(err)
	}
	return clientStream{s}, nil
}

// clientStream turns a stream's errors into *Error too (io.EOF, the normal end, stays).
type clientStream struct{ grpc.ClientStream }

func (s clientStream) SendMsg(m interface{}) error { return streamError(s.ClientStream.SendMsg(m)) }
func (s clientStream) RecvMsg(m interface{}) error { return streamError(s.ClientStream.RecvMsg(m)) }

func streamError(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	return ErrorOf(err)
}
