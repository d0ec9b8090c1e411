"""licensd client-side helpers for Python: offline verification of license files and activation leases."""
from .license_file import LicenseFileResult, verify_lease, verify_license_file

__all__ = ["LicenseFileResult", "verify_lease", "verify_license_file"]
