"""licensd client-side helpers for Python: offline verification of license files and
activation leases, and air-gapped activation requests."""
from .license_file import LicenseFileResult, verify_lease, verify_license_file
from .offline_activation import create_offline_activation_request

__all__ = ["LicenseFileResult", "create_offline_activation_request", "verify_lease", "verify_license_file"]
