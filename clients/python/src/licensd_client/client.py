"""`Client`: licensd's six services over gRPC, with the API key, a default timeout,
retries of idempotent calls and typed errors.

    client = Client("https://licensd.example.com", api_key="lsk_…")
    product = client.licensing.GetProduct(id="prod_…").product

Each service attribute (`tenants`, `licensing`, `activation`, `usage`, `audit`,
`webhooks`) has one method per RPC, named as in the .proto. A method takes the request
message, or its fields as keyword arguments, plus `timeout=` and `metadata=`.

Retries (unary calls only): an RPC whose proto says `idempotency_level =
NO_SIDE_EFFECTS` or `IDEMPOTENT`, or a mutation sent with a non-empty `idempotency_key`
(licensd answers its retry with the first result, docs/api.md), is retried on
UNAVAILABLE, RESOURCE_EXHAUSTED and ABORTED with capped exponential backoff and full
jitter. Other mutations are sent once: a retry could apply them twice.
"""
from __future__ import annotations

import random
import time
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import grpc
from google.protobuf import descriptor_pb2, symbol_database

from licensd.activation.v1 import activation_service_pb2, activation_service_pb2_grpc
from licensd.audit.v1 import audit_service_pb2, audit_service_pb2_grpc
from licensd.licensing.v1 import licensing_service_pb2, licensing_service_pb2_grpc
from licensd.tenant.v1 import tenant_service_pb2, tenant_service_pb2_grpc
from licensd.usage.v1 import usage_service_pb2, usage_service_pb2_grpc
from licensd.webhook.v1 import webhook_service_pb2, webhook_service_pb2_grpc

from .errors import LicensdError

__version__ = "0.1.0"

_IDEMPOTENT_LEVELS = (
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
)
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED})
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")

Metadata = Sequence[Tuple[str, str]]


def parse_target(url: str, tls: Optional[bool] = None) -> Tuple[str, bool]:
    """(grpc target "host:port", tls) from a base URL or a bare host:port.

    `https://h` is TLS on port 443, `http://h` plaintext on port 80. A bare `host:port` is
    TLS unless `tls=False` is given or the host is loopback: credentials never leave the
    machine in clear by default."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("url: give licensd's base URL (https://host[:port]) or host:port")
    text = url.strip()
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url: {url!r} is not an http:// or https:// URL")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"url: {url!r} has a path; gRPC serves at the root of licensd's port")
        secure = parts.scheme == "https" if tls is None else tls
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as err:
            raise ValueError(f"url: {url!r}: {err}") from None
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return f"{host}:{port}", secure
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"url: {url!r} is neither a URL nor host:port")
    secure = (host not in _LOOPBACK and not host.startswith("127.")) if tls is None else tls
    return text, secure


class _Method:
    """One RPC of a service: adds credentials and the default timeout, retries when safe, raises LicensdError."""

    def __init__(self, client: "Client", stub: Any, method: Any) -> None:
        self._client = client
        self._callable = getattr(stub, method.name)
        self._input = client._message_class(method.input_type)
        self.name = method.name
        self.client_streaming = method.client_streaming
        self.server_streaming = method.server_streaming
        self.idempotent = method.GetOptions().idempotency_level in _IDEMPOTENT_LEVELS
        self.__doc__ = f"{method.full_name}: {self._input.__name__} → {client._message_class(method.output_type).__name__}"

    def __call__(self, request: Any = None, *, timeout: Optional[float] = None, metadata: Optional[Metadata] = None, **fields: Any) -> Any:
        if self.client_streaming:
            if request is None or fields:
                raise TypeError(f"{self.name} takes an iterable of {self._input.__name__} messages")
        elif request is None:
            request = self._input(**fields)
        elif fields:
            raise TypeError(f"{self.name}: give the request message or its fields, not both")
        elif not isinstance(request, self._input):
            raise TypeError(f"{self.name} takes a {self._input.__name__}, not {type(request).__name__}")
        md = self._client._metadata(metadata)
        if self.server_streaming:
            # Streams have no default deadline: they are meant to stay open (leases, tails, usage).
            try:
                return _Responses(self._callable(request, timeout=timeout, metadata=md))
            except grpc.RpcError as err:
                raise LicensdError.from_rpc_error(err) from None
        deadline = self._client.timeout if timeout is None else timeout
        safe = not self.client_streaming and (self.idempotent or bool(getattr(request, "idempotency_key", "")))
        attempts = 1 + (self._client.retries if safe else 0)
        for attempt in range(attempts):
            try:
                return self._callable(request, timeout=deadline, metadata=md)
            except grpc.RpcError as err:
                error = LicensdError.from_rpc_error(err)
                if attempt + 1 >= attempts or error.code not in _RETRYABLE:
                    raise error from None
                self._client._sleep(self._client._backoff(attempt, error.retry_after))
        raise AssertionError("unreachable")


class _Responses:
    """A server stream whose failures surface as LicensdError; `cancel()` ends it."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as err:
            raise LicensdError.from_rpc_error(err) from None

    def cancel(self) -> None:
        self._call.cancel()


class Service:
    """The RPCs of one licensd service as methods (see the module docstring)."""

    def __init__(self, client: "Client", file_descriptor: Any, service_name: str, stub_class: Callable[[grpc.Channel], Any]) -> None:
        descriptor = file_descriptor.services_by_name[service_name]
        self.full_name = descriptor.full_name
        stub = stub_class(client.channel)
        self._methods: Dict[str, _Method] = {m.name: _Method(client, stub, m) for m in descriptor.methods}

    def __getattr__(self, name: str) -> _Method:
        try:
            return self.__dict__["_methods"][name]
        except KeyError:
            raise AttributeError(f"{self.__dict__.get('full_name', 'service')} has no RPC {name!r}") from None

    def __dir__(self) -> Iterable[str]:
        return list(self._methods)


class Client:
    """licensd over gRPC. Nothing connects until the first call; `close()` (or `with`) ends the channel.

    - `url`: `https://host[:port]`, `http://host:port` (plaintext) or `host:port` (see `parse_target`).
    - `api_key`: a tenant API key (`lsk_…`) or the super-admin key, sent as `authorization: Bearer …`.
      Public RPCs (Activate, ValidateLicense, ConnectLease, StreamUsage with license keys, …) need none.
    - `tls`: overrides what the URL implies; `root_certificates` (PEM) trusts a private CA.
    - `timeout`: seconds for each unary attempt (streams have none unless a call gives one).
    - `retries`: extra attempts for calls that are safe to repeat; `backoff_initial` / `backoff_max`
      bound the jittered delays in seconds.
    """

    def __init__(
        self,
        url: str,
        api_key: Optional[str] = None,
        *,
        tls: Optional[bool] = None,
        root_certificates: Optional[bytes] = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        channel_options: Sequence[Tuple[str, Any]] = (),
    ) -> None:
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip() or any(c in api_key for c in "\r\n")):
            raise ValueError("api_key: a non-empty key on one line, or None for public RPCs only")
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError("timeout: seconds, greater than 0")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError("retries: a whole number, 0 or more")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("backoff: 0 < backoff_initial <= backoff_max")
        self.target, self.tls = parse_target(url, tls)
        self.timeout = float(timeout)
        self.retries = retries
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._auth: Tuple[Tuple[str, str], ...] = (("authorization", f"Bearer {api_key.strip()}"),) if api_key else ()
        options = [("grpc.primary_user_agent", f"licensd-client-python/{__version__}"), *channel_options]
        if self.tls:
            self.channel = grpc.secure_channel(self.target, grpc.ssl_channel_credentials(root_certificates), options=options)
        else:
            self.channel = grpc.insecure_channel(self.target, options=options)
        self._sleep = time.sleep
        self.tenants = Service(self, tenant_service_pb2.DESCRIPTOR, "TenantService", tenant_service_pb2_grpc.TenantServiceStub)
        self.licensing = Service(self, licensing_service_pb2.DESCRIPTOR, "LicensingService", licensing_service_pb2_grpc.LicensingServiceStub)
        self.activation = Service(self, activation_service_pb2.DESCRIPTOR, "ActivationService", activation_service_pb2_grpc.ActivationServiceStub)
        self.usage = Service(self, usage_service_pb2.DESCRIPTOR, "UsageService", usage_service_pb2_grpc.UsageServiceStub)
        self.audit = Service(self, audit_service_pb2.DESCRIPTOR, "AuditService", audit_service_pb2_grpc.AuditServiceStub)
        self.webhooks = Service(self, webhook_service_pb2.DESCRIPTOR, "WebhookService", webhook_service_pb2_grpc.WebhookServiceStub)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _metadata(self, extra: Optional[Metadata]) -> Tuple[Tuple[str, str], ...]:
        return self._auth + tuple(extra or ())

    def _backoff(self, attempt: int, server_hint: Optional[float]) -> float:
        """Full jitter over a doubling, capped window, so clients cut off together do not return in step."""
        window = min(self._backoff_max, self._backoff_initial * (2 ** attempt))
        delay = random.uniform(0, window)
        return max(delay, min(server_hint, self._backoff_max)) if server_hint else delay

    @staticmethod
    def _message_class(descriptor: Any) -> Any:
        """The generated class itself (a factory would build a second, unequal class for the same message)."""
        return symbol_database.Default().GetSymbol(descriptor.full_name)
