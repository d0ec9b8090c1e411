"""licensd's public signing keys (ActivationService.GetSigningKeys), fetched and cached.

Everything licensd signs names its key by `kid`. Keys rotate (`licensd keys rotate`): a
new key signs from then on, the old one stays published while what it signed is still
trusted. So a verifier holds the published set for `ttl` seconds, and on a `kid` it does
not know it fetches the set once more before it says UNKNOWN_KEY, at most once every
`min_refetch_interval` seconds so a stream of made-up kids cannot turn into a stream of
requests.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from .audit_proof import AuditProofResult, verify_audit_proof
from .license_file import LicenseFileResult, verify_lease, verify_license_file
from .validation import verify_validation_response

KeyFetcher = Callable[[], Mapping[str, bytes]]


def fetch_signing_keys(client: Any) -> Dict[str, bytes]:
    """kid → raw 32-byte Ed25519 public key, from a `Client` (a public RPC: no API key needed)."""
    return {k.kid: bytes(k.public_key) for k in client.activation.GetSigningKeys().keys}


class SigningKeys:
    """A cached, self-refreshing view of the published keys. Thread-safe.

    `source` is a `Client`, or any function returning kid → public key bytes."""

    def __init__(
        self,
        source: Any,
        *,
        ttl: float = 3600.0,
        min_refetch_interval: float = 30.0,
        initial: Optional[Mapping[str, bytes]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or min_refetch_interval < 0:
            raise ValueError("ttl must be > 0 and min_refetch_interval >= 0 (seconds)")
        self._fetch: KeyFetcher = source if callable(source) else (lambda: fetch_signing_keys(source))
        self._ttl = ttl
        self._min_refetch = min_refetch_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: Dict[str, bytes] = dict(initial or {})
        self._fetched_at: Optional[float] = None
        #: How many times the keys were fetched (for callers that watch their traffic).
        self.fetches = 0

    def get(self) -> Dict[str, bytes]:
        """The published keys, fetched when none are held or the held ones are older than `ttl`.
        A failed refresh keeps the keys held (and raises only when there are none)."""
        with self._lock:
            now = self._clock()
            if self._fetched_at is None or now - self._fetched_at >= self._ttl:
                try:
                    self._refresh(now)
                except Exception:
                    if not self._keys:
                        raise
            return dict(self._keys)

    def for_kid(self, kid: str) -> Dict[str, bytes]:
        """The keys, refetched first when `kid` is not among them (a rotation since the last fetch)."""
        keys = self.get()
        if kid in keys:
            return keys
        with self._lock:
            now = self._clock()
            if self._fetched_at is None or now - self._fetched_at >= self._min_refetch:
                try:
                    self._refresh(now)
                except Exception:
                    pass  # the verdict stays UNKNOWN_KEY; the next unknown kid tries again
            return dict(self._keys)

    def _refresh(self, now: float) -> None:
        keys = {str(kid): bytes(pk) for kid, pk in self._fetch().items()}
        self.fetches += 1
        self._keys = keys
        self._fetched_at = now

    # The verifiers, with the rotation rule applied: an UNKNOWN_KEY verdict is given only after a refetch.

    def verify_license_file(self, file: str, **options: Any) -> LicenseFileResult:
        result = verify_license_file(file, keys=self.get(), **options)
        if result.code == "UNKNOWN_KEY" and result.payload is not None:
            result = verify_license_file(file, keys=self.for_kid(str(result.payload.get("kid"))), **options)
        return result

    def verify_lease(self, token: str, fingerprint: str, now: Optional[datetime] = None) -> LicenseFileResult:
        result = verify_lease(token, self.get(), fingerprint, now)
        if result.code == "UNKNOWN_KEY" and result.payload is not None:
            result = verify_lease(token, self.for_kid(str(result.payload.get("kid"))), fingerprint, now)
        return result

    def verify_validation_response(self, response: Any, nonce: Optional[str] = None, **scope: Any) -> bool:
        """As the module's verify_validation_response; `scope` takes its product_code, fingerprint, user and
        entitlements."""
        from .validation import as_json

        answer = as_json(response)
        return verify_validation_response(answer, self.for_kid(str(answer.get("kid", ""))), nonce, **scope)

    def verify_audit_proof(self, checkpoint: Any, **proof: Any) -> AuditProofResult:
        from .audit_proof import as_json as checkpoint_json

        kid = str(checkpoint_json(checkpoint).get("kid", ""))
        return verify_audit_proof(checkpoint, self.for_kid(kid), **proof)


def keys_from_list(keys: Sequence[Any]) -> Dict[str, bytes]:
    """kid → public key from SigningKey messages (or dicts with kid and public_key bytes)."""
    out: Dict[str, bytes] = {}
    for k in keys:
        kid = k["kid"] if isinstance(k, Mapping) else k.kid
        pk = k["public_key"] if isinstance(k, Mapping) else k.public_key
        out[str(kid)] = bytes(pk)
    return out
