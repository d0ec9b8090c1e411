"""Verifies a licensd license file offline with the Python client (clients/python), taking the
public keys from the server's ActivationService.GetSigningKeys over gRPC (generated stubs).

Usage: python3 python_license_file.py HOST:PORT FINGERPRINT < license-file
Prints {"code": ..., "valid": ..., "features": [...], "wrong_machine": ..., "tampered": ...}.
"""
import base64
import json
import sys

from e2e_client import activation  # noqa: E402  (puts gen/python and licensd_client on the path)

from licensd_client import verify_license_file  # noqa: E402

target, fingerprint = sys.argv[1], sys.argv[2]
license_file = sys.stdin.read().strip()
stub, keys = activation(target)

result = verify_license_file(license_file, keys=keys, fingerprint=fingerprint)
# Grant oneself another feature, keeping the signature: must not verify.
prefix, body, sig = license_file.split(".")
claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
claims["features"].append("enterprise-everything")
forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
tampered = f"{prefix}.{forged_body}.{sig}"
print(json.dumps({
    "code": result.code,
    "valid": result.valid,
    "features": (result.payload or {}).get("features"),
    "wrong_machine": verify_license_file(license_file, keys=keys, fingerprint="someone-else").code,
    "tampered": verify_license_file(tampered, keys=keys, fingerprint=fingerprint).code,
}))
