// Package licensd is the Go client of licensd, the self-hosted licensing service.
//
// It holds three things, none of which needs the server's code:
//
//   - Dial / New: a gRPC client for the six services (tenants, licensing, activation,
//     usage, audit, webhooks) with the API key sent as per-RPC credentials, a default
//     per-call timeout, retries of idempotent calls with capped, jittered exponential
//     backoff, and errors (ErrorOf) that expose the ErrorInfo reason, metadata and
//     BadRequest field violations;
//   - offline verifiers (VerifyLicenseFile, VerifyLease, VerifyValidationResponse,
//     VerifyAuditProof) over Ed25519 keys that SigningKeys fetches, caches and refetches
//     on rotation; the byte formats are specified in licensd's docs/formats.md;
//   - gates: LicenseInfo, a license state that never fails, and net/http middleware
//     RequireLicense / RequireFeature answering 402/403 with a JSON body;
//   - UsageUploader: usage recorded to an fsync'd on-disk spool and streamed to licensd,
//     every recorded event counted once across crashes and reconnects.
//
// The generated messages and stubs live in licensd.dev/client/gen/licensd/<domain>/v1.
package licensd
