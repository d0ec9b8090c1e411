"""UsageUploader: records usage events durably on disk and streams them to licensd.

`record()` returns once the event is in the spool and fsync'd: from then on it survives a
crash of the process or the machine. A background thread sends the spool over
`UsageService.StreamUsage` in batches, keeps each batch until its ack arrives (licensd
acks only after its transaction committed, docs/usage.md), journals the ack, and drops
the acknowledged events. After a crash or a dropped connection every event not yet acked
is sent again with its original idempotency key: events that did commit come back as
duplicates, so each event is counted exactly once.

Spool layout (one directory per uploader; one process at a time, enforced by a lock file):

    seg-<n>.jsonl   events, one JSON object per line, appended and fsync'd by record()
    acks.log        JSON lines {"s": segment, "l": [line, …]}: events licensd acknowledged
    lock            flock'd while an uploader owns the directory

A segment is deleted once all its events are acknowledged. A line torn by a crash was
never acknowledged to the caller (record() had not returned), and is skipped.

Disk bound: `max_spool_bytes` (default 64 MiB) caps the segments. When the spool is full,
`record()` raises `SpoolFull` and records nothing: events already recorded are never
dropped to make room (they may be billable). The caller decides: retry later, count the
loss, or slow down. Events licensd refuses (LIMIT_EXCEEDED, INVALID_TIME for events older
than 7 days, an unknown metric, …) are acknowledged as rejections: they leave the spool,
are counted in `rejected` and reported to `on_rejected`.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from google.protobuf import timestamp_pb2
from licensd.usage.v1 import usage_pb2, usage_service_pb2

from .client import Client
from .errors import LicensdError

try:
    import fcntl
except ImportError:  # not on Windows: the single-owner rule is then the caller's
    fcntl = None  # type: ignore[assignment]

MAX_QUANTITY = 2**53 - 1
_Entry = Tuple[int, int]  # (segment number, line number)


class SpoolFull(Exception):
    """record() refused an event: the spool holds `max_spool_bytes` already (see the module docstring)."""


@dataclass(frozen=True)
class Rejected:
    """An event licensd refused; it has left the spool."""

    idempotency_key: str
    metric: str
    quantity: int
    reason: str
    message: str


class UsageUploader:
    """`record(metric, quantity, attrs)` durably; a daemon thread uploads. Name the license
    with `license_key` (agents), `lease` (a function returning the current lease token, e.g.
    a LicenseGuard's) or `license_id` (server-side, with an API key of ingest scope)."""

    def __init__(
        self,
        client: Client,
        spool_dir: str,
        *,
        license_key: Optional[str] = None,
        license_id: Optional[str] = None,
        lease: Optional[Callable[[], Optional[str]]] = None,
        batch_size: int = 500,
        max_in_flight: int = 8,
        segment_events: int = 10_000,
        max_spool_bytes: int = 64 * 1024 * 1024,
        idle_close: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        on_rejected: Optional[Callable[[Rejected], None]] = None,
        fsync: bool = True,
    ) -> None:
        if sum(x is not None for x in (license_key, license_id, lease)) != 1:
            raise ValueError("name the license with exactly one of license_key, license_id or lease")
        if not 1 <= batch_size <= 1000:
            raise ValueError("batch_size: 1 to 1000 (StreamUsage's limit per batch)")
        if max_in_flight < 1 or segment_events < 1 or max_spool_bytes < 4096:
            raise ValueError("max_in_flight >= 1, segment_events >= 1, max_spool_bytes >= 4096")
        self.client = client
        self.spool_dir = spool_dir
        self._license_key = license_key
        self._license_id = license_id
        self._lease = lease
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.segment_events = segment_events
        self.max_spool_bytes = max_spool_bytes
        self.idle_close = idle_close
        self._backoff = (backoff_initial, backoff_max)
        self._on_rejected = on_rejected
        self._fsync = fsync
        self._cond = threading.Condition()
        self._halt = threading.Event()
        self._pending: "OrderedDict[_Entry, Dict[str, Any]]" = OrderedDict()
        self._in_flight: Dict[str, List[_Entry]] = {}
        self._sent: set = set()
        self._segments: Dict[int, Dict[str, Any]] = {}  # n → {"lines", "acked": set, "bytes"}
        self._spool_bytes = 0
        self._current: Optional[int] = None
        self._current_file: Any = None
        self._acks_file: Any = None
        self._ack_lines = 0
        self._lock_fd: Optional[int] = None
        self._thread: Optional[threading.Thread] = None
        self._session = uuid.uuid4().hex[:12]
        self._batches = 0
        #: Counters since start(): events licensd accepted, saw before (duplicates), refused.
        self.accepted = 0
        self.duplicates = 0
        self.rejected = 0
        #: The last stream failure, or None once a batch is acknowledged again.
        self.last_error: Optional[str] = None
        self._open()

    # ---------------------------------------------------------------- public

    def record(
        self,
        metric: str,
        quantity: int = 1,
        attrs: Optional[Mapping[str, str]] = None,
        *,
        agent_id: str = "",
        at: Optional[datetime] = None,
        idempotency_key: Optional[str] = None,
    ) -> str:
        """Appends one event to the spool (fsync'd before it returns) and returns its idempotency key.
        `at` is when it happened (default now); licensd accepts events up to 7 days old."""
        if not isinstance(metric, str) or not metric:
            raise ValueError("metric: a non-empty string")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 <= quantity <= MAX_QUANTITY:
            raise ValueError(f"quantity: a whole number from 0 to {MAX_QUANTITY}")
        attributes = dict(attrs or {})
        if len(attributes) > 16 or not all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()):
            raise ValueError("attrs: up to 16 string keys and values")
        key = idempotency_key or f"u-{uuid.uuid4().hex}"
        if not 1 <= len(key) <= 128:
            raise ValueError("idempotency_key: 1 to 128 characters")
        when = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
        event = {"k": key, "m": metric, "q": quantity, "t": when.isoformat().replace("+00:00", "Z"), "a": attributes, "g": agent_id}
        line = (json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
        with self._cond:
            if self._current_file is None:
                raise RuntimeError("the uploader is stopped")
            if self._spool_bytes + len(line) > self.max_spool_bytes:
                raise SpoolFull(f"the usage spool holds {self._spool_bytes} of {self.max_spool_bytes} bytes; event not recorded")
            seg = self._segments[self._current]
            self._current_file.write(line)
            self._current_file.flush()
            if self._fsync:
                os.fsync(self._current_file.fileno())
            entry = (self._current, seg["lines"])
            seg["lines"] += 1
            seg["bytes"] += len(line)
            self._spool_bytes += len(line)
            self._pending[entry] = event
            if seg["lines"] >= self.segment_events:
                self._rotate()
            self._cond.notify_all()
        return key

    @property
    def pending(self) -> int:
        """Events recorded and not yet acknowledged."""
        with self._cond:
            return len(self._pending)

    @property
    def spool_bytes(self) -> int:
        with self._cond:
            return self._spool_bytes

    def start(self) -> "UsageUploader":
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="licensd-usage-uploader", daemon=True)
                self._thread.start()
        return self

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until every recorded event is acknowledged; False when `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.2 if left is None else min(left, 0.2))
            return True

    def stop(self, flush_timeout: float = 0.0) -> None:
        """Stops uploading (after trying to flush for `flush_timeout` seconds); what is left stays in the spool."""
        if flush_timeout > 0:
            self.flush(flush_timeout)
        self._halt.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(15)
        with self._cond:
            for f in (self._current_file, self._acks_file):
                if f is not None:
                    f.close()
            self._current_file = self._acks_file = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> "UsageUploader":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---------------------------------------------------------------- the spool

    def _path(self, name: str) -> str:
        return os.path.join(self.spool_dir, name)

    def _open(self) -> None:
        """Takes the directory, reads what a previous run left, and starts a fresh segment."""
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        self._lock_fd = os.open(self._path("lock"), os.O_RDWR | os.O_CREAT, 0o600)
        if fcntl is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise RuntimeError(f"another UsageUploader is using {self.spool_dir}") from None
        acked: Dict[int, set] = {}
        try:
            with open(self._path("acks.log"), encoding="utf-8") as f:
                for text in f:
                    try:
                        rec = json.loads(text)
                        acked.setdefault(int(rec["s"]), set()).update(int(x) for x in rec["l"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn last line: those acks are lost, the events are resent as duplicates
        except FileNotFoundError:
            pass
        numbers = sorted(int(n[4:-6]) for n in os.listdir(self.spool_dir) if n.startswith("seg-") and n.endswith(".jsonl") and n[4:-6].isdigit())
        for n in numbers:
            path = self._path(f"seg-{n:012d}.jsonl")
            with open(path, "rb") as f:
                raw = f.read()
            lines = raw.split(b"\n")
            done = acked.get(n, set())
            seg = {"lines": 0, "acked": set(done), "bytes": len(raw)}
            for i, text in enumerate(lines[:-1] if raw.endswith(b"\n") or not raw else lines):
                seg["lines"] = i + 1
                if i in done:
                    continue
                try:
                    event = json.loads(text)
                    if not isinstance(event, dict) or "k" not in event:
                        raise ValueError
                except ValueError:
                    seg["acked"].add(i)  # torn or unreadable: nothing to send
                    continue
                self._pending[(n, i)] = event
            if len(seg["acked"]) >= seg["lines"]:
                os.unlink(path)
                continue
            self._segments[n] = seg
            self._spool_bytes += seg["bytes"]
        # Rewrite the ack journal with only what the remaining segments need.
        text = "".join(json.dumps({"s": n, "l": sorted(s["acked"])}) + "\n" for n, s in self._segments.items() if s["acked"])
        from .guard import write_atomic

        write_atomic(self._path("acks.log"), text)
        self._ack_lines = len(self._segments)
        self._acks_file = open(self._path("acks.log"), "a", encoding="utf-8")
        self._current = (numbers[-1] + 1) if numbers else 1
        self._start_segment()

    def _start_segment(self) -> None:
        n = self._current
        assert n is not None
        self._current_file = open(self._path(f"seg-{n:012d}.jsonl"), "ab")
        self._segments[n] = {"lines": 0, "acked": set(), "bytes": 0}
        if self._fsync:
            _fsync_dir(self.spool_dir)

    def _rotate(self) -> None:
        self._current_file.close()
        assert self._current is not None
        self._current += 1
        self._start_segment()

    def _acknowledge(self, entries: List[_Entry]) -> None:
        """Journals the ack (fsync'd), drops the events, deletes segments that are done. Holds _cond."""
        by_segment: Dict[int, List[int]] = {}
        for n, i in entries:
            by_segment.setdefault(n, []).append(i)
        self._acks_file.write("".join(json.dumps({"s": n, "l": lines}) + "\n" for n, lines in by_segment.items()))
        self._acks_file.flush()
        if self._fsync:
            os.fsync(self._acks_file.fileno())
        self._ack_lines += len(by_segment)
        for entry in entries:
            self._pending.pop(entry, None)
            self._sent.discard(entry)
        for n, lines in by_segment.items():
            seg = self._segments.get(n)
            if seg is None:
                continue
            seg["acked"].update(lines)
            if n != self._current and len(seg["acked"]) >= seg["lines"]:
                try:
                    os.unlink(self._path(f"seg-{n:012d}.jsonl"))
                except FileNotFoundError:
                    pass
                self._spool_bytes -= seg["bytes"]
                del self._segments[n]
        # An idle current segment that is fully acknowledged is rotated out so its bytes are freed.
        cur = self._segments.get(self._current) if self._current is not None else None
        if cur is not None and cur["lines"] > 0 and len(cur["acked"]) >= cur["lines"]:
            self._rotate()
            self._acknowledge_cleanup()
        if self._ack_lines > 10_000:
            self._compact_acks()
        self._cond.notify_all()

    def _acknowledge_cleanup(self) -> None:
        for n in [n for n, s in self._segments.items() if n != self._current and s["lines"] and len(s["acked"]) >= s["lines"]]:
            try:
                os.unlink(self._path(f"seg-{n:012d}.jsonl"))
            except FileNotFoundError:
                pass
            self._spool_bytes -= self._segments[n]["bytes"]
            del self._segments[n]

    def _compact_acks(self) -> None:
        from .guard import write_atomic

        self._acks_file.close()
        text = "".join(json.dumps({"s": n, "l": sorted(s["acked"])}) + "\n" for n, s in self._segments.items() if s["acked"])
        write_atomic(self._path("acks.log"), text)
        self._acks_file = open(self._path("acks.log"), "a", encoding="utf-8")
        self._ack_lines = len(self._segments)

    # ---------------------------------------------------------------- the stream

    def _run(self) -> None:
        attempt = 0
        while not self._halt.is_set():
            with self._cond:
                while not self._pending and not self._halt.is_set():
                    self._cond.wait(1.0)
            if self._halt.is_set():
                return
            try:
                progressed = self._stream_once()
                attempt = 0 if progressed else attempt
                if progressed:
                    continue
            except LicensdError as err:
                self.last_error = str(err)
            except Exception as err:  # keep uploading whatever happens; the spool holds the events
                self.last_error = f"{type(err).__name__}: {err}"
            initial, cap = self._backoff
            window = min(cap, initial * (2 ** attempt))
            attempt += 1
            self._halt.wait(random.uniform(window / 2, window))

    def _stream_once(self) -> bool:
        """One StreamUsage stream: sends what is pending, ends when idle. True when any batch was acknowledged."""
        session = {"over": False}
        progressed = False
        call = self.client.usage.StreamUsage(self._batches_to_send(session))
        try:
            for ack in call:
                with self._cond:
                    entries = self._in_flight.pop(ack.batch_id, None)
                    if entries is None:
                        continue
                    rejected = {r.index: r for r in ack.rejected}
                    events = [self._pending.get(e) for e in entries]
                    self._acknowledge(entries)
                    self.accepted += ack.accepted
                    self.duplicates += ack.duplicates
                    self.rejected += len(rejected)
                    self.last_error = None
                progressed = True
                for index, r in rejected.items():
                    event = events[index] if 0 <= index < len(events) else None
                    if event is not None and self._on_rejected is not None:
                        try:
                            self._on_rejected(Rejected(event["k"], event["m"], int(event["q"]), r.reason, r.message))
                        except Exception:
                            pass  # the app's callback failing must not stop the upload
            return progressed or not self._pending
        finally:
            with self._cond:
                session["over"] = True
                # Every batch without an ack goes back to be sent again, with the same keys.
                for entries in self._in_flight.values():
                    self._sent.difference_update(entries)
                self._in_flight.clear()
                self._cond.notify_all()
            call.cancel()

    def _batches_to_send(self, session: Dict[str, bool]) -> Iterator[usage_service_pb2.StreamUsageRequest]:
        """Runs in gRPC's sending thread: yields batches while fewer than max_in_flight await acks;
        ends the stream once nothing was pending or in flight for idle_close seconds."""
        idle_since: Optional[float] = None
        while True:
            with self._cond:
                while True:
                    if session["over"] or self._halt.is_set():
                        return
                    unsent = len(self._pending) - len(self._sent)
                    if unsent > 0 and len(self._in_flight) < self.max_in_flight:
                        break
                    if unsent == 0 and not self._in_flight:
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since >= self.idle_close:
                            return
                    else:
                        idle_since = None
                    self._cond.wait(0.2)
                idle_since = None
                entries: List[_Entry] = []
                for entry in self._pending:
                    if entry not in self._sent:
                        entries.append(entry)
                        if len(entries) >= self.batch_size:
                            break
                self._sent.update(entries)
                self._batches += 1
                batch_id = f"{self._session}-{self._batches}"
                self._in_flight[batch_id] = entries
                events = [self._pending[e] for e in entries]
            yield usage_service_pb2.StreamUsageRequest(batch_id=batch_id, events=[self._event(e) for e in events])

    def _event(self, e: Mapping[str, Any]) -> usage_pb2.UsageEvent:
        when = timestamp_pb2.Timestamp()
        when.FromJsonString(e["t"])
        event = usage_pb2.UsageEvent(
            metric=e["m"], quantity=int(e["q"]), time=when, idempotency_key=e["k"],
            agent_id=e.get("g") or "", attributes=e.get("a") or {},
        )
        if self._license_key is not None:
            event.license_key = self._license_key
        elif self._license_id is not None:
            event.license_id = self._license_id
        else:
            event.lease = (self._lease() if self._lease else None) or ""
        return event


def _fsync_dir(path: str) -> None:
    """A new file's directory entry survives a power loss once the directory is synced."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
