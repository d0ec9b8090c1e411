"""Receiving licensd's webhooks (docs/formats.md, "Webhook signatures"), as the Standard
Webhooks specification (https://www.standardwebhooks.com) defines them:

    webhook-id         the event id (stable across retries: deduplicate on it)
    webhook-timestamp  Unix seconds when this attempt was signed
    webhook-signature  space-separated `v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`

The key is the base64 after `whsec_` in the endpoint's secret. While a secret is rotated a
delivery carries one signature per valid secret; any one that matches passes. Deliveries
signed more than five minutes before or after `now` are refused (replays).

    try:
        message = verify_webhook(request.get_data(), request.headers, secret)
    except WebhookVerificationError as e:
        return "", 400          # e.reason: "BAD_SIGNATURE", "TIMESTAMP_OUT_OF_TOLERANCE", ...
    handle(message.event["type"], message.event["data"], dedupe_on=message.id)
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Optional, Union

#: Standard Webhooks' default tolerance: five minutes either way.
TOLERANCE_SECONDS = 300

_PREFIX = "whsec_"
_SECONDS = re.compile(r"^[0-9]{1,15}$")


class WebhookVerificationError(ValueError):
    """A refused delivery. `reason` is one of MISSING_HEADERS, BAD_SECRET, MALFORMED,
    TIMESTAMP_OUT_OF_TOLERANCE, BAD_SIGNATURE (the reasons the other clients give)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class WebhookMessage:
    """A verified delivery: its webhook-id, when it was signed, and the parsed body
    (`{"type", "timestamp", "data"}`)."""

    id: str
    timestamp: datetime
    event: Any


def _header(headers: Any, name: str) -> Optional[str]:
    """One header, by case-insensitive name: a dict, WSGI/Werkzeug/Django/Starlette headers,
    or email.message.Message. Repeated values are joined with spaces."""
    getall = getattr(headers, "get_all", None) or getattr(headers, "getlist", None)
    if callable(getall):
        try:
            values = [v for v in (getall(name) or []) if v is not None]
        except (KeyError, TypeError):
            values = []
        if values:
            return " ".join(str(v) for v in values)
    if isinstance(headers, Mapping):
        for key, value in headers.items():
            if str(key).lower() == name:
                if isinstance(value, (list, tuple)):
                    return " ".join(str(v) for v in value)
                return None if value is None else str(value)
    return None


def webhook_secret_key(secret: str) -> bytes:
    """The key bytes of `whsec_<base64>`; raises WebhookVerificationError(BAD_SECRET) otherwise."""
    if not isinstance(secret, str) or not secret.startswith(_PREFIX):
        raise WebhookVerificationError("BAD_SECRET", "the secret is not whsec_ followed by base64 key bytes")
    text = secret[len(_PREFIX):]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise WebhookVerificationError("BAD_SECRET", "the secret is not whsec_ followed by base64 key bytes")
    return key


def webhook_signature(key: bytes, msg_id: str, timestamp: Union[int, str], body: bytes) -> bytes:
    """The v1 signature (raw HMAC-SHA256 bytes) of one delivery under one key."""
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode("utf-8") + body, hashlib.sha256).digest()


def verify_webhook(
    payload: Union[bytes, bytearray, str],
    headers: Any,
    secret: str,
    now: Union[None, datetime, float, int] = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> WebhookMessage:
    """Checks one delivery and returns it parsed; raises WebhookVerificationError otherwise.
    `payload` is the raw request body exactly as received (re-serialized JSON does not
    verify), `headers` the request's headers, `secret` the endpoint's `whsec_...` secret,
    `now` the time to check against (a datetime or Unix seconds; default the clock)."""
    msg_id = (_header(headers, "webhook-id") or "").strip()
    stamp = (_header(headers, "webhook-timestamp") or "").strip()
    signatures = (_header(headers, "webhook-signature") or "").strip()
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError(
            "MISSING_HEADERS", "webhook-id, webhook-timestamp and webhook-signature are required"
        )
    key = webhook_secret_key(secret)
    if not _SECONDS.match(stamp):
        raise WebhookVerificationError("MALFORMED", "webhook-timestamp is not a number of seconds")
    seconds = int(stamp)
    if now is None:
        now_s = int(time.time())
    elif isinstance(now, datetime):
        now_s = int(now.timestamp() // 1)
    else:
        now_s = int(now // 1)
    if seconds < now_s - tolerance:
        raise WebhookVerificationError("TIMESTAMP_OUT_OF_TOLERANCE", "the delivery is too old")
    if seconds > now_s + tolerance:
        raise WebhookVerificationError("TIMESTAMP_OUT_OF_TOLERANCE", "the delivery is in the future")

    body = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    expected = webhook_signature(key, msg_id, stamp, body)
    matched = False
    for entry in signatures.split(" "):
        version, sep, value = entry.partition(",")
        # Other versions (v1a, ...) and junk are skipped: a signature we cannot check is no match.
        if not sep or version != "v1":
            continue
        try:
            given = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        # Every candidate compared (no early exit), each in constant time.
        if hmac.compare_digest(given, expected):
            matched = True
    if not matched:
        raise WebhookVerificationError("BAD_SIGNATURE", "no v1 signature matches this secret and body")
    try:
        event = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise WebhookVerificationError("MALFORMED", "the body is not UTF-8 JSON") from None
    return WebhookMessage(id=msg_id, timestamp=datetime.fromtimestamp(seconds, timezone.utc), event=event)
