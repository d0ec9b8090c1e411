"""Feature gates: a license state that never raises, and the checks that use it.

`LicenseInfo` is PocketPaw's shape (valid, code, features, tier, expiry, grace), the same
state the TypeScript LicenseGuard reports. It is built from a verified license file, a
lease or a LicenseGuard; building one never raises.

The gates answer HenKaiPan's way: no valid license is 402 Payment Required, a valid one
without the feature is 403 Forbidden, both with the JSON body
`{"error": "license_required", "feature": <name or null>, "code": <why>}`:

    @require_feature("reports", guard)          # a function: raises LicenseRequired
    app = WSGILicenseGate(app, guard, feature="reports")      # a WSGI app
    app = ASGILicenseGate(app, guard, feature="reports")      # an ASGI app

`source` is anything that yields a LicenseInfo: a LicenseGuard (its `info()`), a function
returning one, or a LicenseInfo. It is read on every call, so expiry is seen at once.
"""
from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

from .license_file import LicenseFileResult, verify_lease, verify_license_file


@dataclass(frozen=True)
class LicenseInfo:
    """What a product may do now. `code` is VALID, NO_LICENSE, a verifier's verdict
    (EXPIRED, BAD_SIGNATURE, UNKNOWN_KEY, MALFORMED, FINGERPRINT_MISMATCH, …) or a
    revocation's reason (LICENSE_SUSPENDED, …). `tier` is the license's plan; `grace` is
    true while the license itself has expired but the policy still grants access (the
    signed status is "expired"). `features` is empty unless `valid`."""

    valid: bool
    code: str
    features: Tuple[str, ...] = ()
    tier: Optional[str] = None
    expiry: Optional[datetime] = None
    grace: bool = False
    entitlements: Dict[str, Any] = field(default_factory=dict)
    license_id: Optional[str] = None
    machine_id: Optional[str] = None
    status: Optional[str] = None
    #: LicenseGuard only: its ConnectLease stream is open.
    online: bool = False
    #: Why the last attempt to reach licensd (or to read or write a cache) failed, if it did.
    error: Optional[str] = None

    def has_feature(self, name: str) -> bool:
        return self.valid and name in self.features

    def entitlement(self, name: str) -> Any:
        """The entitlement's value (bool, number or tier name) while valid; None otherwise."""
        return self.entitlements.get(name) if self.valid else None

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready form, for a status endpoint or a settings page."""
        return {
            "valid": self.valid,
            "code": self.code,
            "features": list(self.features),
            "tier": self.tier,
            "expiry": self.expiry.isoformat().replace("+00:00", "Z") if self.expiry else None,
            "grace": self.grace,
            "entitlements": dict(self.entitlements),
            "license_id": self.license_id,
            "machine_id": self.machine_id,
            "status": self.status,
            "online": self.online,
            "error": self.error,
        }

    @classmethod
    def none(cls, code: str = "NO_LICENSE", error: Optional[str] = None, online: bool = False) -> "LicenseInfo":
        return cls(False, code, online=online, error=error)

    @classmethod
    def from_result(cls, result: LicenseFileResult, **extra: Any) -> "LicenseInfo":
        """From a verifier's result. A payload that failed verification lends no claims."""
        try:
            payload = result.payload if isinstance(result.payload, dict) else {}
            trusted = result.code not in ("MALFORMED", "BAD_SIGNATURE", "UNKNOWN_KEY", "HMAC_NOT_ALLOWED", "DECRYPTION_FAILED")
            if not trusted:
                return cls(False, result.code, **extra)
            expiry = _time(payload.get("expires_at"))
            status = payload.get("status") if isinstance(payload.get("status"), str) else None
            features = tuple(str(f) for f in payload.get("features", []) if isinstance(f, str)) if result.valid else ()
            entitlements = payload.get("entitlements") if result.valid and isinstance(payload.get("entitlements"), dict) else {}
            return cls(
                valid=bool(result.valid),
                code=result.code,
                features=features,
                tier=payload.get("plan") if isinstance(payload.get("plan"), str) else None,
                expiry=expiry,
                grace=bool(result.valid and status == "expired"),
                entitlements=dict(entitlements),
                license_id=payload.get("license_id") if isinstance(payload.get("license_id"), str) else None,
                machine_id=payload.get("machine_id") if isinstance(payload.get("machine_id"), str) else None,
                status=status,
                **extra,
            )
        except Exception as err:  # never raise: a state we cannot read is no license
            return cls(False, "MALFORMED", error=str(err))


def _time(value: Any) -> Optional[datetime]:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def license_info(
    file: Optional[str],
    keys: Mapping[str, bytes],
    *,
    lease: bool = False,
    fingerprint: Optional[str] = None,
    license_key: Optional[str] = None,
    now: Optional[datetime] = None,
) -> LicenseInfo:
    """The LicenseInfo of a license file (or, with `lease=True`, a lease token). Never raises:
    a missing file is NO_LICENSE, anything wrong with it is its verdict."""
    if not file:
        return LicenseInfo.none()
    try:
        if lease:
            result = verify_lease(file, keys, fingerprint or "", now)
        else:
            result = verify_license_file(file, keys=keys, license_key=license_key, fingerprint=fingerprint, now=now)
    except Exception as err:
        return LicenseInfo.none("MALFORMED", error=str(err))
    return LicenseInfo.from_result(result)


LicenseSource = Union[LicenseInfo, Callable[[], LicenseInfo], Any]


def read_license(source: LicenseSource) -> LicenseInfo:
    """The current LicenseInfo from a source; a source that fails gives an invalid state, never an exception."""
    try:
        if isinstance(source, LicenseInfo):
            return source
        if hasattr(source, "info") and callable(source.info):
            info = source.info()
        elif callable(source):
            info = source()
        else:
            return LicenseInfo.none("NO_LICENSE", error=f"not a license source: {type(source).__name__}")
        return info if isinstance(info, LicenseInfo) else LicenseInfo.none("NO_LICENSE", error="the license source gave no LicenseInfo")
    except Exception as err:
        return LicenseInfo.none("NO_LICENSE", error=f"the license source failed: {err}")


@dataclass(frozen=True)
class Refusal:
    """Why a gate said no: the HTTP status and body it answers with."""

    status: int
    feature: Optional[str]
    code: str

    @property
    def body(self) -> Dict[str, Any]:
        return {"error": "license_required", "feature": self.feature, "code": self.code}

    @property
    def reason_phrase(self) -> str:
        return "402 Payment Required" if self.status == 402 else "403 Forbidden"


def check(info: LicenseInfo, feature: Optional[str] = None) -> Optional[Refusal]:
    """None when `info` allows the call; otherwise 402 (no valid license) or 403 (feature missing)."""
    if not info.valid:
        return Refusal(402, feature, info.code)
    if feature is not None and feature not in info.features:
        return Refusal(403, feature, "FEATURE_NOT_LICENSED")
    return None


class LicenseRequired(Exception):
    """Raised by a gated function when the license does not allow the call."""

    def __init__(self, refusal: Refusal, info: LicenseInfo) -> None:
        what = f"feature {refusal.feature!r}" if refusal.feature and refusal.status == 403 else "a valid license"
        super().__init__(f"{refusal.reason_phrase}: this needs {what} ({refusal.code})")
        self.refusal = refusal
        self.info = info
        self.status = refusal.status
        self.feature = refusal.feature
        self.code = refusal.code
        self.body = refusal.body


def _decorator(source: LicenseSource, feature: Optional[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        def gate() -> None:
            info = read_license(source)
            refusal = check(info, feature)
            if refusal is not None:
                raise LicenseRequired(refusal, info)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def gated_async(*args: Any, **kwargs: Any) -> Any:
                gate()
                return await fn(*args, **kwargs)

            return gated_async

        @functools.wraps(fn)
        def gated(*args: Any, **kwargs: Any) -> Any:
            gate()
            return fn(*args, **kwargs)

        return gated

    return decorate


def require_license(source: LicenseSource) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator (sync or async functions): the call raises LicenseRequired (402) without a valid license."""
    return _decorator(source, None)


def require_feature(name: str, source: LicenseSource) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator: LicenseRequired 402 without a valid license, 403 when it lacks `name`."""
    if not isinstance(name, str) or not name:
        raise ValueError("require_feature: name the feature")
    return _decorator(source, name)


def _guarded(path: str, paths: Optional[Sequence[str]]) -> bool:
    return paths is None or any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths)


class WSGILicenseGate:
    """WSGI middleware: requests under `paths` (all, by default) reach `app` only while the
    license allows them; otherwise 402/403 with the JSON body."""

    def __init__(self, app: Callable[..., Iterable[bytes]], source: LicenseSource, feature: Optional[str] = None, paths: Optional[Sequence[str]] = None) -> None:
        self.app = app
        self.source = source
        self.feature = feature
        self.paths = list(paths) if paths is not None else None

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _guarded(environ.get("PATH_INFO", "") or "/", self.paths):
            refusal = check(read_license(self.source), self.feature)
            if refusal is not None:
                body = json.dumps(refusal.body).encode("utf-8")
                start_response(refusal.reason_phrase, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
        return self.app(environ, start_response)


class ASGILicenseGate:
    """ASGI middleware (HTTP; WebSocket connections are closed with code 4402/4403 when refused)."""

    def __init__(self, app: Callable[..., Any], source: LicenseSource, feature: Optional[str] = None, paths: Optional[Sequence[str]] = None) -> None:
        self.app = app
        self.source = source
        self.feature = feature
        self.paths = list(paths) if paths is not None else None

    async def __call__(self, scope: Dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope.get("type") in ("http", "websocket") and _guarded(scope.get("path", "") or "/", self.paths):
            refusal = check(read_license(self.source), self.feature)
            if refusal is not None:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 4000 + refusal.status})
                    return
                body = json.dumps(refusal.body).encode("utf-8")
                await send({
                    "type": "http.response.start",
                    "status": refusal.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                })
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
