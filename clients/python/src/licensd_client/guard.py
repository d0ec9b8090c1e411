"""LicenseGuard: keeps this machine's lease fresh over ConnectLease and answers feature
checks from it, online or offline. A port of the TypeScript LicenseGuard
(clients/ts/src/node/license-guard.ts), with the same cache file, revocation rules and LicenseInfo.

The last lease and the signing keys live in a cache file (written atomically, mode 0600),
so `info()` answers right after `start()`, before or without any network. A background
thread fetches the keys, activates, holds ConnectLease and heartbeats; a lease replaces
the cached one only once it verifies. Validity is recomputed at every call against the
clock, so an expired lease stops granting features even offline.

The cache holds the keys along with the lease: it catches corruption and an edited lease,
not someone who rewrites both (pass `pinned_keys` for that).
"""
from __future__ import annotations

import base64
import json
import os
import platform as _platform
import random
import socket
import tempfile
import threading
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

import grpc
from licensd.activation.v1 import activation_service_pb2 as pb

from .client import Client
from .errors import LicensdError
from .gates import LicenseInfo
from .license_file import LicenseFileResult, verify_lease

# Revocations after which the guard stops reconnecting: someone ended this license or took
# this machine's seat on purpose; reconnecting would take the seat back. HEARTBEAT_DEAD
# (missed heartbeats) activates again at once; anything else can be undone (reinstatement,
# renewal) and is retried at the slowest pace.
FINAL = frozenset({"LICENSE_REVOKED", "LICENSE_DELETED", "MACHINE_DELETED", "MACHINE_DEACTIVATED", "INVALID_LICENSE_KEY"})
# Errors from Activate that the server also pushes as revocations.
REVOKING_ERRORS = frozenset({"LICENSE_SUSPENDED", "LICENSE_REVOKED", "LICENSE_EXPIRED", "HEARTBEAT_DEAD"})
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def write_atomic(path: str, data: str) -> None:
    """Writes a file whole or not at all (temp file, fsync, rename), readable by its owner only."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # the rename itself survives a power loss once the directory is synced
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


class LicenseGuard:
    """Activate once, hold the lease, answer `info()` / `has_feature()` online or offline.

    `client` is a `Client` (or a URL for one); `key` the license key; `fingerprint` this
    machine's; `cache_file` where the lease and keys are kept. `start()` returns at once;
    `stop()` ends the stream and the thread."""

    def __init__(
        self,
        client: Any,
        key: str,
        fingerprint: str,
        cache_file: str,
        *,
        hostname: Optional[str] = None,
        platform: Optional[str] = None,
        heartbeat_interval: float = 300.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        pinned_keys: Optional[Mapping[str, bytes]] = None,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        on_change: Optional[Callable[[LicenseInfo], None]] = None,
    ) -> None:
        if not isinstance(key, str) or not key.strip():
            raise ValueError("key: the license key")
        if not isinstance(fingerprint, str) or not 1 <= len(fingerprint) <= 255:
            raise ValueError("fingerprint: 1 to 255 characters")
        if heartbeat_interval <= 0 or not 0 < backoff_initial <= backoff_max:
            raise ValueError("heartbeat_interval > 0 and 0 < backoff_initial <= backoff_max (seconds)")
        self._own_client = not isinstance(client, Client)
        self.client: Client = Client(client) if self._own_client else client
        self.key = key
        self.fingerprint = fingerprint
        self.cache_file = cache_file
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self.platform = platform if platform is not None else f"{_platform.system().lower()}-{_platform.machine().lower()}"
        self.heartbeat_interval = heartbeat_interval
        self._backoff = (backoff_initial, backoff_max)
        self._pinned = dict(pinned_keys) if pinned_keys else None
        self._now = now
        self._on_change = on_change
        self._lock = threading.RLock()
        self._halt = threading.Event()
        self._keys: Dict[str, bytes] = dict(self._pinned or {})
        self._token: Optional[str] = None
        self._revocation: Optional[str] = None
        self._error: Optional[str] = None
        self._online = False
        self._needs_activation = True
        self._attempt = 0
        self._checked: Optional[tuple] = None
        self._stream: Any = None
        self._thread: Optional[threading.Thread] = None

    # ---------------------------------------------------------------- public

    def start(self) -> "LicenseGuard":
        """Loads the cached lease (so checks answer at once), then keeps the lease fresh in a daemon thread."""
        with self._lock:
            if self._thread is None:
                self._load()
                self._thread = threading.Thread(target=self._run, name="licensd-license-guard", daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ends the stream and the thread (the machine keeps its seat; Deactivate frees it)."""
        self._halt.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._own_client:
            self.client.close()

    def __enter__(self) -> "LicenseGuard":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def info(self) -> LicenseInfo:
        """A snapshot of the license as of now. Never raises."""
        try:
            with self._lock:
                return self._info()
        except Exception as err:
            return LicenseInfo.none("NO_LICENSE", error=f"internal error: {err}")

    def has_feature(self, name: str) -> bool:
        return self.info().has_feature(name)

    @property
    def running(self) -> bool:
        """Whether the guard still keeps the lease fresh: False before start(), after stop(), and after a final revocation."""
        return self._thread is not None and self._thread.is_alive()

    def current_lease(self) -> Optional[str]:
        """The lease token while it is valid (for UsageUploader(lease=guard.current_lease)); None otherwise."""
        with self._lock:
            return self._token if self._info().valid else None

    def entitlement(self, name: str) -> Any:
        return self.info().entitlement(name)

    # ---------------------------------------------------------------- state

    def _info(self) -> LicenseInfo:
        extra = {"online": self._online, "error": self._error}
        if self._revocation:
            return LicenseInfo(False, self._revocation, **extra)
        if not self._token:
            return LicenseInfo(False, "NO_LEASE", **extra)
        check = self._check(self._token)
        if check.payload is None or not check.valid:
            return LicenseInfo.from_result(check, **extra)
        try:
            now = self._now()
        except Exception:
            now = datetime.max.replace(tzinfo=timezone.utc)  # fail safe: an unreadable clock is past every expiry
        expiry = check.payload.get("expires_at")
        result = check
        if expiry is not None:
            parsed = _parse(expiry)
            if parsed is None or parsed <= now:
                result = LicenseFileResult(False, "EXPIRED", check.payload)
        return LicenseInfo.from_result(result, **extra)

    def _check(self, token: str) -> LicenseFileResult:
        """Signature and binding, once per token and key set; expiry is judged per call in _info()."""
        if self._checked is None or self._checked[0] != token or self._checked[1] is not self._keys:
            try:
                result = verify_lease(token, self._keys, self.fingerprint, now=_EPOCH)
            except Exception:
                result = LicenseFileResult(False, "MALFORMED")
            self._checked = (token, self._keys, result)
        return self._checked[2]

    def _load(self) -> None:
        try:
            with open(self.cache_file, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return
        except OSError as err:
            self._error = f"cannot read the cache file: {err}"
            return
        try:
            cache = json.loads(text)
            lease = cache.get("lease")
            self._token = lease if isinstance(lease, str) else None
            if self._pinned is None:
                self._keys = {str(k["kid"]): base64.b64decode(str(k["publicKey"])) for k in cache.get("keys", [])}
        except (ValueError, TypeError, KeyError, AttributeError):
            self._error = "the cache file is not valid JSON or not a lease cache; ignored"

    def _persist(self) -> None:
        cache = {
            "v": 1,
            "lease": self._token,
            "keys": [{"kid": kid, "publicKey": base64.b64encode(pk).decode("ascii")} for kid, pk in self._keys.items()],
        }
        try:
            write_atomic(self.cache_file, json.dumps(cache) + "\n")
        except OSError as err:
            self._error = f"cannot write the cache file: {err}"

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change(self.info())
            except Exception:
                pass  # the app's callback failing must not stop the guard

    # ---------------------------------------------------------------- the connection

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                nxt = self._connect()
            except LicensdError as err:
                if self._halt.is_set():
                    break
                nxt = self._failed(err)
            except Exception as err:  # a bug or a surprise must not kill the guard
                self._error = f"{type(err).__name__}: {err}"
                nxt = "retry"
            if nxt == "stop" or self._halt.is_set():
                break
            self._halt.wait(self._delay(slowest=nxt == "slow"))

    def _delay(self, slowest: bool) -> float:
        """Capped, jittered backoff, so a fleet cut off together does not return in step."""
        initial, cap = self._backoff
        if slowest:
            return random.uniform(cap / 2, cap)
        window = min(cap, initial * (2 ** self._attempt))
        self._attempt += 1
        return random.uniform(window / 2, window)

    def _connect(self) -> str:
        self._fetch_keys()
        if self._needs_activation:
            res = self.client.activation.Activate(
                key=self.key, fingerprint=self.fingerprint, hostname=self.hostname[:255],
                platform=self.platform[:64], cores=max(1, min(os.cpu_count() or 1, 1024)),
            )
            self._needs_activation = False
            if res.HasField("lease"):
                self._accept(res.lease.token)
        session = threading.Event()
        stream = self.client.activation.ConnectLease(self._heartbeats(session))
        self._stream = stream
        try:
            if self._halt.is_set():
                return "stop"
            for res in stream:
                which = res.WhichOneof("event")
                if which == "lease":
                    self._attempt = 0
                    with self._lock:
                        self._online = True
                    self._accept(res.lease.token)
                elif which == "revocation":
                    return self._revoke(res.revocation.reason)
            return "retry"  # the server ended the stream without a verdict (it is shutting down)
        except LicensdError as err:
            if err.code == grpc.StatusCode.CANCELLED and self._halt.is_set():
                return "stop"
            raise
        finally:
            session.set()
            self._stream = None
            if self._online:
                with self._lock:
                    self._online = False
                self._changed()

    def _heartbeats(self, session: threading.Event) -> Iterator[pb.ConnectLeaseRequest]:
        """The first message names the license and machine; then an empty heartbeat every interval."""
        yield pb.ConnectLeaseRequest(key=self.key, fingerprint=self.fingerprint)
        while not session.wait(self.heartbeat_interval):
            if self._halt.is_set():
                return
            yield pb.ConnectLeaseRequest()

    def _fetch_keys(self) -> None:
        if self._pinned is not None:
            return
        keys = {k.kid: bytes(k.public_key) for k in self.client.activation.GetSigningKeys().keys}
        with self._lock:
            self._keys = keys

    def _accept(self, token: str) -> None:
        """Stores a lease once it verifies (a key rotated since the keys were fetched is fetched)."""
        now = self._now()
        result = verify_lease(token, self._keys, self.fingerprint, now)
        if result.code == "UNKNOWN_KEY":
            self._fetch_keys()
            result = verify_lease(token, self._keys, self.fingerprint, now)
        with self._lock:
            if not result.valid:
                self._error = f"licensd sent a lease that does not verify ({result.code}); keeping the previous one"
                return
            self._token = token
            self._revocation = None
            self._error = None
            self._persist()
        self._changed()

    def _revoke(self, reason: str) -> str:
        """Drops the lease (here and in the cache) and says whether to reconnect."""
        with self._lock:
            self._revocation = reason
            self._token = None
            self._persist()
        self._changed()
        if reason in FINAL:
            return "stop"
        if reason == "HEARTBEAT_DEAD":
            self._needs_activation = True
            self._attempt = 0
            return "retry"
        return "slow"

    def _failed(self, err: LicensdError) -> str:
        """A failed attempt: the server's verdicts on the license act like revocations; anything else is retried."""
        if err.code == grpc.StatusCode.UNAUTHENTICATED:
            return self._revoke("INVALID_LICENSE_KEY")
        if err.reason in REVOKING_ERRORS:
            return self._revoke(err.reason)
        if err.code == grpc.StatusCode.NOT_FOUND:
            self._needs_activation = True  # the machine is gone while we were away: activate again
        with self._lock:
            self._error = f"{err.code.name}: {err.message}"
        self._changed()
        return "retry"


def _parse(value: Any) -> Optional[datetime]:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


__all__ = ["LicenseGuard", "write_atomic", "FINAL", "REVOKING_ERRORS"]
