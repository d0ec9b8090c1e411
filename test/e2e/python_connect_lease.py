"""Keeps a lease live over ConnectLease with the generated Python gRPC client (a
bidirectional stream): prints one JSON line per server message, sending a heartbeat
after each lease, until the server pushes a revocation and ends the stream.
Usage: python3 python_connect_lease.py HOST:PORT LICENSE_KEY FINGERPRINT"""
import json
import queue
import sys

from e2e_client import activation  # noqa: E402  (puts gen/python and licensd_client on the path)

from licensd.activation.v1 import activation_service_pb2 as pb  # noqa: E402
from licensd_client import verify_lease  # noqa: E402

target, key, fingerprint = sys.argv[1], sys.argv[2], sys.argv[3]
stub, keys = activation(target)

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
