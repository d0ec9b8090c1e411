"""licensd client-side helpers for Python: offline license file verification."""
from .license_file import LicenseFileResult, verify_license_file

__all__ = ["LicenseFileResult", "verify_license_file"]
