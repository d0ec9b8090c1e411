"""Air-gapped activation request files (format: docs/formats.md; TypeScript: clients/ts/src/verify/offline-activation.ts).

    licensd-req1.<base64url(JSON request)>.<base64url(HMAC-SHA256(license key, "licensd-req1.<payload>"))>

The request names the license by the SHA-256 of its key (the key stays on the machine)
and is MACed with the key. The vendor answers with a lease bound to the fingerprint;
verify it with `verify_lease`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from datetime import datetime, timezone
from typing import Optional

REQUEST_PREFIX = "licensd-req1"
_VINZY_KEY = re.compile(r"^[A-Z0-9]{3}(-[A-Z2-7]{5}){7}$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def normalize_license_key(key: str) -> str:
    """Vinzy-format keys are case-insensitive (upper-cased); others are only trimmed."""
    trimmed = key.strip()
    return trimmed.upper() if _VINZY_KEY.match(trimmed.upper()) else trimmed


def create_offline_activation_request(key: str, fingerprint: str, hostname: str = "", platform: str = "", cores: int = 0, now: Optional[datetime] = None) -> str:
    """The content of a request file for this machine."""
    if not 1 <= len(fingerprint) <= 255:
        raise ValueError("fingerprint: must be 1 to 255 characters")
    normalized = normalize_license_key(key)
    created = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    request = {
        "v": 1,
        "typ": "activation_request",
        "key_digest": _b64(hashlib.sha256(normalized.encode()).digest()),
        "fingerprint": fingerprint,
        "hostname": hostname,
        "platform": platform,
        "cores": cores,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}Z",
        "nonce": _b64(os.urandom(12)),
    }
    signing_input = f"{REQUEST_PREFIX}.{_b64(json.dumps(request, separators=(',', ':')).encode())}"
    mac = hmac.new(normalized.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"
