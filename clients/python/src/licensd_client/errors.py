"""Typed errors: an RPC failure as licensd describes it (docs/requests.md, STYLE "Errors").

licensd sends every error with a `google.rpc.Status` in the `grpc-status-details-bin`
trailer holding an `ErrorInfo` (reason in UPPER_SNAKE_CASE, domain "licensd.dev",
metadata such as the offending `field`) and, for bad input, a `BadRequest` listing every
field violation. `LicensdError` exposes those instead of a bare `grpc.RpcError`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import grpc
from google.rpc import error_details_pb2, status_pb2

_DETAILS_TRAILER = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One entry of the answer's `google.rpc.BadRequest`: the field as protovalidate names it."""

    field: str
    description: str
    reason: str = ""


class LicensdError(Exception):
    """An RPC that failed. `code` is the gRPC status; `reason`, `domain` and `metadata`
    come from the answer's ErrorInfo (empty when it had none, e.g. a connection failure)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        domain: str = "",
        metadata: Optional[Dict[str, str]] = None,
        field_violations: Tuple[FieldViolation, ...] = (),
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(f"{code.name}: {reason + ': ' if reason else ''}{message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.field_violations = tuple(field_violations)
        #: Seconds the server asked us to wait (google.rpc.RetryInfo), when it said.
        self.retry_after = retry_after

    @property
    def field(self) -> Optional[str]:
        """The offending field, as ErrorInfo's metadata names it (the first violation for bad input)."""
        return self.metadata.get("field")

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> "LicensdError":
        """Reads the code, message and rich details of a failed call (unary or stream)."""
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        message = (err.details() if hasattr(err, "details") else None) or ""
        reason = domain = ""
        metadata: Dict[str, str] = {}
        violations: list = []
        retry_after: Optional[float] = None
        trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
        for key, value in trailers or ():
            if key != _DETAILS_TRAILER or not isinstance(value, bytes):
                continue
            try:
                status = status_pb2.Status.FromString(value)
            except Exception:  # a details trailer we cannot parse still leaves the code and message
                continue
            message = status.message or message
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                bad = error_details_pb2.BadRequest()
                retry = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    if not reason:
                        reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
                elif detail.Unpack(bad):
                    violations.extend(FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations)
                elif detail.Unpack(retry):
                    retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        return cls(code or grpc.StatusCode.UNKNOWN, message, reason, domain, metadata, tuple(violations), retry_after)
