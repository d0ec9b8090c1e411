"""Activates a machine through the generated Python gRPC client and verifies the lease
offline with the Python client (licensd_client). Usage: python3 python_lease.py HOST:PORT LICENSE_KEY"""
import json
import sys

from e2e_client import activation  # noqa: E402  (puts gen/python and licensd_client on the path)

import grpc  # noqa: E402
from licensd.activation.v1 import activation_service_pb2 as pb  # noqa: E402
from licensd_client import verify_lease  # noqa: E402

target, key = sys.argv[1], sys.argv[2]
stub, keys = activation(target)
res = stub.Activate(pb.ActivateRequest(key=key, fingerprint="py-host", hostname="py", platform="linux-x64", cores=2))
lease = verify_lease(res.lease.token, keys, fingerprint="py-host")
try:
    stub.Activate(pb.ActivateRequest(key=key, fingerprint=""))
    bad = "accepted"
except grpc.RpcError as err:
    bad = err.code().name
print(json.dumps({
    "machine": res.machine.fingerprint,
    "code": lease.code,
    "machine_id_matches": (lease.payload or {}).get("machine_id") == res.machine.id,
    "other_machine": verify_lease(res.lease.token, keys, fingerprint="other").code,
    "bad_input": bad,
}))
