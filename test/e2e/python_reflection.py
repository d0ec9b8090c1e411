"""What grpcio sees of an error, and its details decoded as grpcurl does: every type
(google.rpc.Status, then each Any's type) looked up through server reflection, with no
compiled-in schema. Prints JSON: the code, the message, the decoded details, or the
symbols reflection did not know.

Usage: python_reflection.py HOST:PORT
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

REFLECTION = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def field(tag: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (tag < 16, payload < 128 bytes)."""
    return bytes([tag << 3 | 2, len(payload)]) + payload


def read_fields(data: bytes):
    """(field number, value) for each field of a protobuf message: varints as int, the rest as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(data, pos)
        elif wire == 2:
            size, pos = read_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"wire type {wire}")
        yield number, value


def read_varint(data: bytes, pos: int):
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, pos


class ReflectionPool:
    """A descriptor pool filled on demand through grpc.reflection.v1, as grpcurl's is."""

    def __init__(self, channel: grpc.Channel):
        self.call = channel.stream_stream(REFLECTION)
        self.pool = descriptor_pool.DescriptorPool()
        self.added: set[str] = set()
        self.unknown: list[str] = []

    def message_class(self, full_name: str):
        try:
            desc = self.pool.FindMessageTypeByName(full_name)
        except KeyError:
            if not self.load(full_name):
                self.unknown.append(full_name)
                return None
            desc = self.pool.FindMessageTypeByName(full_name)
        get = getattr(message_factory, "GetMessageClass", None)
        return get(desc) if get else message_factory.MessageFactory(self.pool).GetPrototype(desc)

    def load(self, symbol: str) -> bool:
        # ServerReflectionRequest.file_containing_symbol is field 4.
        (response,) = list(self.call(iter([field(4, symbol.encode())])))
        files = []
        for number, value in read_fields(response):
            if number == 7:  # error_response
                return False
            if number == 4:  # file_descriptor_response: repeated bytes file_descriptor_proto = 1
                files += [descriptor_pb2.FileDescriptorProto.FromString(v) for n, v in read_fields(value) if n == 1]
        pending = [f for f in files if f.name not in self.added]
        while pending:  # dependencies first
            ready = [f for f in pending if all(d in self.added for d in f.dependency)]
            if not ready:
                raise ValueError(f"unresolvable imports in {[f.name for f in pending]}")
            for f in ready:
                self.pool.Add(f)
                self.added.add(f.name)
            pending = [f for f in pending if f.name not in self.added]
        return True


def main() -> None:
    channel = grpc.insecure_channel(sys.argv[1])
    service = "licensd: ünknown 100% \U0001F600".encode()
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    try:
        check(field(1, service))
        raise SystemExit("expected NOT_FOUND")
    except grpc.RpcError as e:
        code, message, trailers = e.code().name, e.details(), dict(e.trailing_metadata() or ())
    reflection = ReflectionPool(channel)
    out = {"code": code, "message": message, "details": [], "unknown": reflection.unknown}
    status_class = reflection.message_class("google.rpc.Status")
    if status_class is not None and "grpc-status-details-bin" in trailers:
        status = status_class.FromString(trailers["grpc-status-details-bin"])
        for detail in status.details:
            cls = reflection.message_class(detail.type_url.rsplit("/", 1)[-1])
            if cls is not None:
                out["details"].append({"type": detail.type_url, **json_format.MessageToDict(cls.FromString(detail.value))})
    print(json.dumps(out, ensure_ascii=False))


main()
