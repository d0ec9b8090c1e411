"""Client-side checks of licensd's audit log (docs/formats.md: "Audit log entries",
"Merkle tree", "Checkpoints"): entry hashes, RFC 6962 leaves and roots, RFC 9162 proof
verification and Ed25519-signed checkpoints. Entries and checkpoints are taken in their
proto3 JSON form, as Connect JSON or `json_format.MessageToDict` gives them."""
from __future__ import annotations

import base64
import calendar
import hashlib
import re
from typing import Any, Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .jcs import canonical_json

GENESIS_HASH = bytes(32)
EMPTY_ROOT = hashlib.sha256(b"").digest()
_RFC3339_UTC = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z$")


def _time(text: str) -> tuple[str, int]:
    """An RFC 3339 UTC time as (ISO text with exactly 3 fraction digits, unix ms)."""
    m = _RFC3339_UTC.match(text)
    if not m:
        raise ValueError(f"not an RFC 3339 UTC time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    ms = int((m.group(7) or "").ljust(3, "0")[:3])
    unix = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return f"{text[:19]}.{ms:03d}Z", unix * 1000 + ms


def entry_fields(api_entry: Mapping[str, Any]) -> dict:
    """The nine members an entry's hash covers, from its proto3 JSON form."""
    return {
        "tenant_id": api_entry.get("tenantId", ""),
        "seq": int(api_entry.get("seq", "0")),
        "id": api_entry.get("id", ""),
        "type": api_entry.get("type", ""),
        "subject": api_entry.get("subject", ""),
        "actor": api_entry.get("actor", ""),
        "payload": api_entry.get("payload", {}),
        "occurred_at": _time(api_entry["occurTime"])[0],
        "prev_hash": base64.b64decode(api_entry.get("prevHash", "")).hex(),
    }


def entry_hash(api_entry: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(canonical_json(entry_fields(api_entry)).encode("utf-8")).digest()


def leaf_hash(entry_hash_bytes: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry_hash_bytes).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree_hash(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH over leaf hashes."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(tree_hash(leaves[:k]), tree_hash(leaves[k:]))


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    if index < 0 or index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = node_hash(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> bool:
    """RFC 9162 §2.1.4.2."""
    if size1 <= 0 or size1 > size2:
        return False
    if size1 == size2:
        return len(proof) == 0 and root1 == root2
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    if not path:
        return False
    fn, sn = size1 - 1, size2 - 1
    while fn % 2 == 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root1 and sr == root2


def checkpoint_text(tenant_id: str, tree_size: int, root: bytes, sign_time_ms: int) -> str:
    return f"licensd.dev/audit/v1\n{tenant_id}\n{tree_size}\n{base64.b64encode(root).decode('ascii')}\n{sign_time_ms}\n"


def verify_checkpoint(api_checkpoint: Mapping[str, Any], keys: Mapping[str, bytes]) -> bool:
    """Whether the checkpoint is signed by the published key it names; the text is rebuilt from its fields."""
    key = keys.get(api_checkpoint.get("kid", ""))
    if key is None:
        return False
    try:
        text = checkpoint_text(
            api_checkpoint.get("tenantId", ""),
            int(api_checkpoint.get("treeSize", "0")),
            base64.b64decode(api_checkpoint.get("rootHash", "")),
            _time(api_checkpoint["signTime"])[1],
        )
        Ed25519PublicKey.from_public_bytes(key).verify(base64.b64decode(api_checkpoint.get("signature", "")), text.encode("utf-8"))
        return True
    except (InvalidSignature, ValueError, KeyError):
        return False
