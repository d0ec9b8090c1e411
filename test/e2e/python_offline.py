"""Air-gapped activation with the Python SDK. `request KEY FINGERPRINT` prints a request
file; `verify HOST:PORT FINGERPRINT < response` verifies the response file offline, with
keys fetched once over gRPC."""
import json
import os
import sys

root = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(root, "gen", "python"))
sys.path.insert(0, os.path.join(root, "sdk", "python"))

import grpc  # noqa: E402
from licensd.activation.v1 import activation_service_pb2 as pb, activation_service_pb2_grpc  # noqa: E402
from licensd_sdk import verify_lease  # noqa: E402

from licensd_sdk import create_offline_activation_request  # noqa: E402

if sys.argv[1] == "request":
    print(create_offline_activation_request(sys.argv[2], sys.argv[3], hostname="py-vault", platform="linux-x64", cores=2))
    sys.exit(0)
target, fingerprint = sys.argv[2], sys.argv[3]
stub = activation_service_pb2_grpc.ActivationServiceStub(grpc.insecure_channel(target))
keys = {k.kid: k.public_key for k in stub.GetSigningKeys(pb.GetSigningKeysRequest()).keys}
token = sys.stdin.read().strip()
result = verify_lease(token, keys, fingerprint=fingerprint)
print(json.dumps({
    "code": result.code,
    "offline": (result.payload or {}).get("offline"),
    "other_machine": verify_lease(token, keys, fingerprint="other").code,
}))
