"""licensd's Python client: the generated gRPC stubs of its six services (packages
`licensd.*`, `google.rpc`, `buf.validate`) and a small hand-written layer:

- `Client`: the services over gRPC with an API key, timeouts, retries and `LicensdError`;
- offline verifiers (docs/formats.md): `verify_license_file`, `verify_lease`,
  `verify_validation_response`, `verify_audit_proof`, and `SigningKeys` (fetching,
  caching and key rotation);
- gates: `LicenseInfo` (never raises), `require_license` / `require_feature` decorators,
  `WSGILicenseGate` / `ASGILicenseGate` middleware (402 / 403);
- `LicenseGuard`: activation and a live lease over ConnectLease, cached for offline use;
- `UsageUploader`: usage events spooled on disk and streamed with StreamUsage, exactly once;
- `verify_webhook`: a received webhook delivery checked (Standard Webhooks signatures).

Importing it starts nothing: no thread, no connection, no file.
"""
from .audit import entry_hash, verify_checkpoint, verify_consistency, verify_inclusion
from .audit_proof import AuditProofResult, verify_audit_proof
from .client import Client, Service, __version__, parse_target
from .errors import FieldViolation, LicensdError
from .gates import (
    ASGILicenseGate,
    LicenseInfo,
    LicenseRequired,
    Refusal,
    WSGILicenseGate,
    check,
    license_info,
    read_license,
    require_feature,
    require_license,
)
from .guard import LicenseGuard
from .jcs import canonical_json
from .keys import SigningKeys, fetch_signing_keys
from .license_file import LicenseFileResult, verify_lease, verify_license_file
from .offline_activation import create_offline_activation_request
from .uploader import Rejected, SpoolFull, UsageUploader
from .validation import verify_validation_response
from .webhooks import WebhookMessage, WebhookVerificationError, verify_webhook

__all__ = [
    "ASGILicenseGate",
    "AuditProofResult",
    "Client",
    "FieldViolation",
    "LicenseFileResult",
    "LicenseGuard",
    "LicenseInfo",
    "LicenseRequired",
    "LicensdError",
    "Refusal",
    "Rejected",
    "Service",
    "SigningKeys",
    "SpoolFull",
    "UsageUploader",
    "WSGILicenseGate",
    "WebhookMessage",
    "WebhookVerificationError",
    "__version__",
    "canonical_json",
    "check",
    "create_offline_activation_request",
    "entry_hash",
    "fetch_signing_keys",
    "license_info",
    "parse_target",
    "read_license",
    "require_feature",
    "require_license",
    "verify_audit_proof",
    "verify_checkpoint",
    "verify_consistency",
    "verify_inclusion",
    "verify_lease",
    "verify_license_file",
    "verify_validation_response",
    "verify_webhook",
]
