"""Verification of signed ValidateLicense answers (docs/formats.md, "Signed ValidateLicense
answers"): Ed25519 over the RFC 8785 canonical JSON of the answer's proto3 JSON form,
without `kid` and `signature`.

Give the answer as parsed Connect JSON, or as `json_format.MessageToDict(response)` for a
gRPC answer (generated code must know every field of the answer for that to verify)."""
from __future__ import annotations

import base64
from typing import Any, Mapping, Optional, Sequence

from google.protobuf import json_format
from google.protobuf.message import Message

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .jcs import canonical_json


def validation_signing_bytes(response: Mapping[str, Any]) -> bytes:
    """The bytes licensd signed: the answer without kid and signature, canonicalized."""
    return canonical_json({k: v for k, v in response.items() if k not in ("kid", "signature")}).encode("utf-8")


def as_json(response: Any) -> dict:
    """A ValidateLicenseResponse message or its proto3 JSON form, as the JSON form."""
    if isinstance(response, Message):
        return json_format.MessageToDict(response)
    if isinstance(response, Mapping):
        return dict(response)
    raise TypeError(f"expected a ValidateLicenseResponse or its JSON form, not {type(response).__name__}")


def scope_matches(
    response: Mapping[str, Any],
    product_code: Optional[str] = None,
    fingerprint: Optional[str] = None,
    user: Optional[str] = None,
    entitlements: Optional[Sequence[str]] = None,
    components: Optional[Sequence[Mapping[str, str]]] = None,
) -> bool:
    """Whether the answer's signed `scope` is the one the request asked (arguments left as
    None are not checked; `components` as {"name", "fingerprint"} mappings, in any order).
    Servers from this version on echo the scope; an answer judged for another machine or
    user does not match."""
    scope = response.get("scope") or {}
    if not isinstance(scope, Mapping):
        return False
    for expected, member in ((product_code, "productCode"), (fingerprint, "fingerprint"), (user, "user")):
        if expected is not None and scope.get(member, "") != expected:
            return False
    if entitlements is not None and list(scope.get("entitlements", [])) != list(entitlements):
        return False

    def pairs(items: Any) -> list:
        return sorted((str(c.get("name", "")), str(c.get("fingerprint", ""))) for c in items)

    return components is None or pairs(scope.get("components", [])) == pairs(components)


def verify_validation_response(
    response: Any,
    keys: Mapping[str, bytes],
    nonce: Optional[str] = None,
    *,
    product_code: Optional[str] = None,
    fingerprint: Optional[str] = None,
    user: Optional[str] = None,
    entitlements: Optional[Sequence[str]] = None,
    components: Optional[Sequence[Mapping[str, str]]] = None,
) -> bool:
    """Whether the answer is signed by the published key it names (and echoes `nonce`, when given).
    `response` is the generated message or its JSON form; `keys` maps kid to the raw 32-byte
    Ed25519 public key (ActivationService.GetSigningKeys). Give the nonce you sent: without
    it a recorded answer could be replayed to you. Give the scope you sent (`product_code`,
    `fingerprint`, `user`, `entitlements`, `components`, as in the request) to check that the answer judged
    that scope and not another machine's or user's."""
    try:
        response = as_json(response)
    except TypeError:
        return False
    if nonce is not None and response.get("nonce", "") != nonce:
        return False
    if not scope_matches(response, product_code, fingerprint, user, entitlements, components):
        return False
    key = keys.get(response.get("kid", ""))
    signature = response.get("signature")
    if key is None or not isinstance(signature, str):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(base64.b64decode(signature, validate=True), validation_signing_bytes(response))
        return True
    except (InvalidSignature, ValueError):
        return False
