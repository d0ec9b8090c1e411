"""Keeps a lease live over ConnectLease with the generated Python gRPC client (a
bidirectional stream): prints one JSON line per server message, sending a heartbeat
after each lease, until the server pushes a revocation and ends the stream.
Usage: python3 python_connect_lease.py HOST:PORT LICENSE_KEY FINGERPRINT"""
import json
import os
import queue
import sys

root = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(root, "gen", "python"))
sys.path.insert(0, os.path.join(root, "sdk", "python"))

import grpc  # noqa: E402
from licensd.activation.v1 import activation_service_pb2 as pb, activation_service_pb2_grpc  # noqa: E402
from licensd_sdk import verify_lease  # noqa: E402

target, key, fingerprint = sys.argv[1], sys.argv[2], sys.argv[3]
stub = activation_service_pb2_grpc.ActivationServiceStub(grpc.insecure_channel(target))
keys = {k.kid: k.public_key for k in stub.GetSigningKeys(pb.GetSigningKeysRequest()).keys}

outbox: "queue.Queue[pb.ConnectLeaseRequest | None]" = queue.Queue()
outbox.put(pb.ConnectLeaseRequest(key=key, fingerprint=fingerprint))


def requests():
    while True:
        msg = outbox.get()
        if msg is None:
            return
        yield msg


leases = 0
for res in stub.ConnectLease(requests()):
    if res.WhichOneof("event") == "lease":
        leases += 1
        print(json.dumps({"lease": verify_lease(res.lease.token, keys, fingerprint=fingerprint).code, "n": leases}), flush=True)
        if leases < 2:
            outbox.put(pb.ConnectLeaseRequest())  # a heartbeat
    else:
        print(json.dumps({"revocation": res.revocation.reason}), flush=True)
outbox.put(None)
print(json.dumps({"ended": True}), flush=True)
