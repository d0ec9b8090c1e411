"""What the Python e2e scripts share: the generated stubs and the SDK on the path, an
ActivationService stub for HOST:PORT, and the signing keys it publishes."""
import os
import sys

root = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(root, "gen", "python"))
sys.path.insert(0, os.path.join(root, "clients", "python", "src"))

import grpc  # noqa: E402
from licensd.activation.v1 import activation_service_pb2 as pb, activation_service_pb2_grpc  # noqa: E402


def activation(target: str):
    """An ActivationService stub and the public keys by kid (fetched once)."""
    stub = activation_service_pb2_grpc.ActivationServiceStub(grpc.insecure_channel(target))
    keys = {k.kid: k.public_key for k in stub.GetSigningKeys(pb.GetSigningKeysRequest()).keys}
    return stub, keys
