"""The generated Python client (gen/python, grpcio) against a running licensd.

Usage: python3 python_client.py HOST:PORT SUPER_ADMIN_KEY
Prints one JSON object describing what it saw; the TypeScript e2e test asserts on it.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "gen", "python"))

import grpc  # noqa: E402
from google.rpc import error_details_pb2, status_pb2  # noqa: E402
from licensd.tenant.v1 import api_key_pb2, tenant_service_pb2, tenant_service_pb2_grpc  # noqa: E402


def error_info(err: grpc.RpcError):
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return {"reason": info.reason, "domain": info.domain, "metadata": dict(info.metadata)}
    return None


def main():
    target, super_key = sys.argv[1], sys.argv[2]
    channel = grpc.insecure_channel(target)
    stub = tenant_service_pb2_grpc.TenantServiceStub(channel)
    as_admin = [("authorization", f"Bearer {super_key}")]
    out = {}

    a = stub.CreateTenant(tenant_service_pb2.CreateTenantRequest(name="Py Tenant A", metadata={"sdk": "python"}), metadata=as_admin).tenant
    b = stub.CreateTenant(tenant_service_pb2.CreateTenantRequest(name="Py Tenant B"), metadata=as_admin).tenant
    out["tenant_a"] = {"id": a.id, "name": a.name, "metadata": dict(a.metadata)}
    key_a = stub.CreateApiKey(tenant_service_pb2.CreateApiKeyRequest(tenant_id=a.id, name="py", scopes=[api_key_pb2.API_KEY_SCOPE_ADMIN]), metadata=as_admin)
    key_b = stub.CreateApiKey(tenant_service_pb2.CreateApiKeyRequest(tenant_id=b.id, name="py", scopes=[api_key_pb2.API_KEY_SCOPE_ADMIN]), metadata=as_admin)
    out["secret_prefix"] = key_a.secret[:4]

    as_a = [("authorization", f"Bearer {key_a.secret}")]
    as_b = [("authorization", f"Bearer {key_b.secret}")]
    out["a_sees_itself"] = stub.GetTenant(tenant_service_pb2.GetTenantRequest(), metadata=as_a).tenant.id == a.id
    out["a_keys"] = [k.id for k in stub.ListApiKeys(tenant_service_pb2.ListApiKeysRequest(), metadata=as_a).api_keys]
    out["b_keys"] = [k.id for k in stub.ListApiKeys(tenant_service_pb2.ListApiKeysRequest(), metadata=as_b).api_keys]
    out["a_key_id"] = key_a.api_key.id

    try:
        stub.ListApiKeys(tenant_service_pb2.ListApiKeysRequest(tenant_id=a.id), metadata=as_b)
        out["cross_tenant"] = "allowed"
    except grpc.RpcError as err:
        out["cross_tenant"] = {"code": err.code().name, "info": error_info(err)}

    try:
        stub.CreateTenant(tenant_service_pb2.CreateTenantRequest(name=""), metadata=as_admin)
        out["bad_input"] = "accepted"
    except grpc.RpcError as err:
        out["bad_input"] = {"code": err.code().name, "details": err.details(), "info": error_info(err)}

    try:
        stub.GetTenant(tenant_service_pb2.GetTenantRequest(id=a.id))
        out["anonymous"] = "allowed"
    except grpc.RpcError as err:
        out["anonymous"] = {"code": err.code().name}

    print(json.dumps(out))


if __name__ == "__main__":
    main()
