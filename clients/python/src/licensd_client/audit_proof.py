"""`verify_audit_proof`: an audit entry's inclusion in, and an older checkpoint's
consistency with, a signed checkpoint (docs/formats.md "Merkle tree", "Checkpoints").

The checkpoint's signature is checked first: a proof against an unsigned root proves
nothing. Inputs may be generated messages (AuditEvent, Checkpoint, the proof answers) or
their proto3 JSON form (Connect JSON, `json_format.MessageToDict`).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

from google.protobuf import json_format
from google.protobuf.message import Message

from .audit import entry_hash, leaf_hash, verify_checkpoint, verify_consistency, verify_inclusion

Hashes = Union[Sequence[bytes], Sequence[str], Message, Mapping[str, Any]]


@dataclass(frozen=True)
class AuditProofResult:
    """`code`: VALID, BAD_CHECKPOINT (signature, key or fields), NOT_INCLUDED, INCONSISTENT or MALFORMED."""

    valid: bool
    code: str
    tree_size: int = 0


def as_json(value: Any) -> dict:
    """A message or its proto3 JSON form, as the JSON form (what signatures and hashes are defined over)."""
    if isinstance(value, Message):
        return json_format.MessageToDict(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"expected a protobuf message or its JSON form, not {type(value).__name__}")


def _hashes(proof: Hashes) -> list:
    if isinstance(proof, Message):
        return [bytes(h) for h in getattr(proof, "hashes")]
    if isinstance(proof, Mapping):
        proof = proof.get("hashes", [])
    return [base64.b64decode(h, validate=True) if isinstance(h, str) else bytes(h) for h in proof]


def verify_audit_proof(
    checkpoint: Any,
    keys: Mapping[str, bytes],
    *,
    entry: Any = None,
    inclusion: Optional[Hashes] = None,
    previous: Any = None,
    consistency: Optional[Hashes] = None,
) -> AuditProofResult:
    """Checks `checkpoint` (signed by a key in `keys`, kid → raw Ed25519 public key), then,
    when given: that `entry` (an AuditEvent) is in its tree by the `inclusion` proof
    (GetInclusionProof's answer or its hashes), and that the tree of the `previous`
    checkpoint is a prefix of it by the `consistency` proof (GetConsistencyProof's).
    Never raises for bad input: the result says what failed."""
    try:
        cp = as_json(checkpoint)
        if not verify_checkpoint(cp, keys):
            return AuditProofResult(False, "BAD_CHECKPOINT")
        size = int(cp.get("treeSize", "0"))
        root = base64.b64decode(cp.get("rootHash", ""))
        if entry is not None:
            if inclusion is None:
                return AuditProofResult(False, "MALFORMED", size)
            e = as_json(entry)
            index = int(e.get("seq", "0")) - 1  # seq counts from 1, leaves from 0
            if not verify_inclusion(leaf_hash(entry_hash(e)), index, size, _hashes(inclusion), root):
                return AuditProofResult(False, "NOT_INCLUDED", size)
        if previous is not None:
            if consistency is None:
                return AuditProofResult(False, "MALFORMED", size)
            old = as_json(previous)
            if not verify_checkpoint(old, keys):
                return AuditProofResult(False, "BAD_CHECKPOINT", size)
            if old.get("tenantId", "") != cp.get("tenantId", ""):
                return AuditProofResult(False, "INCONSISTENT", size)
            old_size = int(old.get("treeSize", "0"))
            old_root = base64.b64decode(old.get("rootHash", ""))
            if not verify_consistency(old_size, size, _hashes(consistency), old_root, root):
                return AuditProofResult(False, "INCONSISTENT", size)
        return AuditProofResult(True, "VALID", size)
    except (ValueError, TypeError, KeyError):
        return AuditProofResult(False, "MALFORMED")
