"""Air-gapped activation with the Python client (licensd_client). `request KEY FINGERPRINT` prints a request
file; `verify HOST:PORT FINGERPRINT < response` verifies the response file offline, with
keys fetched once over gRPC."""
import json
import sys

from e2e_client import activation  # noqa: E402  (puts gen/python and licensd_client on the path)

from licensd_client import verify_lease  # noqa: E402

from licensd_client import create_offline_activation_request  # noqa: E402

if sys.argv[1] == "request":
    print(create_offline_activation_request(sys.argv[2], sys.argv[3], hostname="py-vault", platform="linux-x64", cores=2))
    sys.exit(0)
target, fingerprint = sys.argv[2], sys.argv[3]
stub, keys = activation(target)
token = sys.stdin.read().strip()
result = verify_lease(token, keys, fingerprint=fingerprint)
print(json.dumps({
    "code": result.code,
    "offline": (result.payload or {}).get("offline"),
    "other_machine": verify_lease(token, keys, fingerprint="other").code,
}))
