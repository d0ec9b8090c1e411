"""licensd client-side helpers for Python: offline verification of license files,
activation leases, signed ValidateLicense answers and the audit log, and air-gapped
activation requests. Formats: docs/formats.md."""
from .audit import entry_hash, verify_checkpoint, verify_consistency, verify_inclusion
from .jcs import canonical_json
from .license_file import LicenseFileResult, verify_lease, verify_license_file
from .offline_activation import create_offline_activation_request
from .validation import verify_validation_response

__all__ = [
    "LicenseFileResult",
    "canonical_json",
    "create_offline_activation_request",
    "entry_hash",
    "verify_checkpoint",
    "verify_consistency",
    "verify_inclusion",
    "verify_lease",
    "verify_license_file",
    "verify_validation_response",
]
