"""Checks a live server's signed and hashed artifacts with the Python client's (licensd_client) verifiers,
which were written from docs/formats.md: ValidateLicense answers (over gRPC, converted with
json_format.MessageToDict, and as Connect JSON read from stdin), every audit entry's hash,
link and HMAC (dk1 derived from the data key), inclusion proofs, checkpoints and a
consistency proof across a change made here.

Usage: python3 python_formats.py HOST:PORT SUPER_ADMIN_KEY TENANT_ID LICENSE_KEY FINGERPRINT DATA_KEY_BASE64 < connect-answer.json
Prints a JSON object of named checks, each true when it passed.
"""
import base64
import hashlib
import hmac
import json
import sys

from e2e_client import activation  # noqa: E402  (puts gen/python and licensd_client on the path)

import grpc  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from licensd.audit.v1 import audit_service_pb2 as audit_pb, audit_service_pb2_grpc  # noqa: E402
from licensd.licensing.v1 import licensing_service_pb2 as lic_pb, licensing_service_pb2_grpc  # noqa: E402
from licensd_client import entry_hash, verify_checkpoint, verify_consistency, verify_inclusion, verify_validation_response  # noqa: E402
from licensd_client.audit import GENESIS_HASH, leaf_hash  # noqa: E402

target, admin_key, tenant_id, license_key, fingerprint, data_key_b64 = sys.argv[1:7]
connect_answer = json.loads(sys.stdin.read())
_, keys = activation(target)
channel = grpc.insecure_channel(target)
auth = [("authorization", f"Bearer {admin_key}")]
licensing = licensing_service_pb2_grpc.LicensingServiceStub(channel)
audit = audit_service_pb2_grpc.AuditServiceStub(channel)
checks = {}

# ValidateLicense over gRPC: binary protobuf, converted to proto3 JSON with default options.
answer = licensing.ValidateLicense(lic_pb.ValidateLicenseRequest(key=license_key, fingerprint=fingerprint, entitlements=["reports"], nonce="py-nonce-1"))
as_json = json_format.MessageToDict(answer)
checks["grpc answer is valid and carries a lease"] = answer.valid and answer.lease.startswith("licensd1.")
checks["grpc answer verifies"] = verify_validation_response(as_json, keys, nonce="py-nonce-1")
checks["grpc answer with valid removed fails"] = not verify_validation_response({k: v for k, v in as_json.items() if k != "valid"}, keys)
checks["grpc answer replayed for another nonce fails"] = not verify_validation_response(as_json, keys, nonce="py-nonce-2")
checks["connect JSON answer verifies"] = verify_validation_response(connect_answer, keys, nonce=connect_answer.get("nonce", ""))

# Audit entries: hash from the API's JSON form, chain link, HMAC under dk1.
dk1 = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"licensd audit hmac v1").derive(base64.b64decode(data_key_b64))
events = audit.ListAuditEvents(audit_pb.ListAuditEventsRequest(tenant_id=tenant_id, page_size=1000), metadata=auth).events
events = sorted(events, key=lambda e: e.seq)
prev = GENESIS_HASH
hashes_ok = links_ok = hmacs_ok = True
for e in events:
    hashes_ok &= entry_hash(json_format.MessageToDict(e)) == e.hash
    links_ok &= e.prev_hash == prev
    hmacs_ok &= e.kid == "dk1" and hmac.compare_digest(hmac.new(dk1, e.hash, hashlib.sha256).digest(), e.signature)
    prev = e.hash
checks["audit log has entries, numbered from 1"] = len(events) > 3 and [e.seq for e in events] == list(range(1, len(events) + 1))
checks["every entry hash recomputes"] = hashes_ok
checks["every entry links to the previous"] = links_ok
checks["every entry HMAC verifies under dk1"] = hmacs_ok

# Checkpoint, inclusion of every entry, then consistency with a checkpoint after a change.
first = audit.GetCheckpoint(audit_pb.GetCheckpointRequest(tenant_id=tenant_id), metadata=auth).checkpoint
checks["checkpoint verifies"] = first.tree_size == len(events) and verify_checkpoint(json_format.MessageToDict(first), keys)
tampered = json_format.MessageToDict(first)
tampered["treeSize"] = str(first.tree_size + 1)
checks["checkpoint with another size fails"] = not verify_checkpoint(tampered, keys)
included = True
for e in events:
    proof = audit.GetInclusionProof(audit_pb.GetInclusionProofRequest(tenant_id=tenant_id, seq=e.seq, tree_size=first.tree_size), metadata=auth)
    included &= verify_inclusion(leaf_hash(entry_hash(json_format.MessageToDict(e))), e.seq - 1, first.tree_size, list(proof.hashes), first.root_hash)
checks["every entry is in the checkpoint's tree"] = included
licensing.CreateCustomer(lic_pb.CreateCustomerRequest(tenant_id=tenant_id, name="Formats Py", email="formats-py@example.com"), metadata=auth)
second = audit.GetCheckpoint(audit_pb.GetCheckpointRequest(tenant_id=tenant_id), metadata=auth).checkpoint
proof = audit.GetConsistencyProof(audit_pb.GetConsistencyProofRequest(tenant_id=tenant_id, old_size=first.tree_size, new_size=second.tree_size), metadata=auth)
checks["the later checkpoint extends the first"] = second.tree_size == first.tree_size + 1 and verify_checkpoint(json_format.MessageToDict(second), keys) and verify_consistency(
    first.tree_size, second.tree_size, list(proof.hashes), first.root_hash, second.root_hash
)
print(json.dumps(checks))
