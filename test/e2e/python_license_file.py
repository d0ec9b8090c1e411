"""Verifies a licensd license file offline with the Python SDK (sdk/python), taking the
public keys from the server's ActivationService.GetSigningKeys over gRPC (generated stubs).

Usage: python3 python_license_file.py HOST:PORT FINGERPRINT < license-file
Prints {"code": ..., "valid": ..., "features": [...], "wrong_machine": ..., "tampered": ...}.
"""
import base64
import json
import os
import sys

root = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(root, "gen", "python"))
sys.path.insert(0, os.path.join(root, "sdk", "python"))

import grpc  # noqa: E402
from licensd.activation.v1 import activation_service_pb2, activation_service_pb2_grpc  # noqa: E402
from licensd_sdk import verify_license_file  # noqa: E402

target, fingerprint = sys.argv[1], sys.argv[2]
license_file = sys.stdin.read().strip()
stub = activation_service_pb2_grpc.ActivationServiceStub(grpc.insecure_channel(target))
keys = {k.kid: k.public_key for k in stub.GetSigningKeys(activation_service_pb2.GetSigningKeysRequest()).keys}

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
