"""Offline verification of licensd license files (format: docs/formats.md).

    licensd1.<base64url(JSON payload)>.<base64url(Ed25519 signature)>
    licensd1h.<base64url(JSON payload)>.<base64url(HMAC-SHA256)>
    licensd1e.<base64url(IV)>.<base64url(AES-256-GCM ciphertext || tag)>   (holds a signed file)

Uses the `cryptography` package (Debian: python3-cryptography). Never raises for a bad
file: the result says why. Fail-safe: an unparseable expiry counts as expired.
"""
from __future__ import annotations

import base64
import hmac as _hmac
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .offline_activation import normalize_license_key

ED25519_PREFIX = "licensd1"
HMAC_PREFIX = "licensd1h"
ENCRYPTED_PREFIX = "licensd1e"


@dataclass
class LicenseFileResult:
    valid: bool
    code: str
    payload: Optional[dict] = field(default=None)

    def has_feature(self, feature: str) -> bool:
        return self.valid and self.payload is not None and feature in self.payload.get("features", [])


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _file_key(license_key: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=ENCRYPTED_PREFIX.encode(), info=b"license file")
    return hkdf.derive(normalize_license_key(license_key).encode())


def _parse_time(value: Any) -> Optional[datetime]:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def verify_license_file(
    file: str,
    keys: Optional[Mapping[str, bytes]] = None,
    hmac_secret: Optional[str] = None,
    allow_hmac: bool = False,
    license_key: Optional[str] = None,
    fingerprint: Optional[str] = None,
    now: Optional[datetime] = None,
) -> LicenseFileResult:
    """Verifies a license file. `keys` maps kid to raw 32-byte Ed25519 public keys.

    A signed payload that carries a `typ` (a lease) is not a license file: MALFORMED."""
    result = _verify_envelope(file, keys, hmac_secret, allow_hmac, license_key, fingerprint, now)
    if result.payload is not None and "typ" in result.payload:
        return LicenseFileResult(False, "MALFORMED", result.payload)
    return result


def _verify_envelope(
    file: str,
    keys: Optional[Mapping[str, bytes]],
    hmac_secret: Optional[str],
    allow_hmac: bool,
    license_key: Optional[str],
    fingerprint: Optional[str],
    now: Optional[datetime],
) -> LicenseFileResult:
    """The checks license files and leases share: the envelope, its signature, expiry and fingerprint."""
    text = file.strip()
    if text.startswith(ENCRYPTED_PREFIX + "."):
        parts = text.split(".")
        if license_key is None or len(parts) != 3:
            return LicenseFileResult(False, "DECRYPTION_FAILED")
        try:
            text = AESGCM(_file_key(license_key)).decrypt(_b64decode(parts[1]), _b64decode(parts[2]), ENCRYPTED_PREFIX.encode()).decode()
        except (InvalidTag, ValueError):
            return LicenseFileResult(False, "DECRYPTION_FAILED")
    parts = text.split(".")
    if len(parts) != 3 or parts[0] not in (ED25519_PREFIX, HMAC_PREFIX):
        return LicenseFileResult(False, "MALFORMED")
    try:
        payload = json.loads(_b64decode(parts[1]))
        version = payload.get("v") if isinstance(payload, dict) else None
        if isinstance(version, bool) or version != 1 or not isinstance(payload.get("kid"), str) or not isinstance(payload.get("features"), list):
            return LicenseFileResult(False, "MALFORMED")
        signature = _b64decode(parts[2])
    except (ValueError, json.JSONDecodeError):
        return LicenseFileResult(False, "MALFORMED")
    signing_input = f"{parts[0]}.{parts[1]}".encode()
    if parts[0] == HMAC_PREFIX:
        if keys and not allow_hmac:
            return LicenseFileResult(False, "HMAC_NOT_ALLOWED", payload)
        if not hmac_secret:
            return LicenseFileResult(False, "UNKNOWN_KEY", payload)
        expected = _hmac.new(hmac_secret.encode(), signing_input, hashlib.sha256).digest()
        if not _hmac.compare_digest(expected, signature):
            return LicenseFileResult(False, "BAD_SIGNATURE", payload)
    else:
        raw = (keys or {}).get(payload["kid"])
        if raw is None:
            return LicenseFileResult(False, "UNKNOWN_KEY", payload)
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, signing_input)
        except (InvalidSignature, ValueError):
            return LicenseFileResult(False, "BAD_SIGNATURE", payload)
    if payload.get("expires_at") is not None:
        expires = _parse_time(payload.get("expires_at"))
        if expires is None or expires <= (now or datetime.now(timezone.utc)):
            return LicenseFileResult(False, "EXPIRED", payload)
    if "fingerprint" in payload and payload["fingerprint"] != fingerprint:
        return LicenseFileResult(False, "FINGERPRINT_MISMATCH", payload)
    return LicenseFileResult(True, "VALID", payload)


def verify_lease(token: str, keys: Mapping[str, bytes], fingerprint: str, now: Optional[datetime] = None) -> LicenseFileResult:
    """Verifies an activation lease (a signed envelope whose payload `typ` is "lease") for this machine."""
    result = _verify_envelope(token, keys, None, False, None, fingerprint, now)
    if result.payload is not None and result.payload.get("typ") != "lease":
        return LicenseFileResult(False, "MALFORMED", result.payload)
    return result
