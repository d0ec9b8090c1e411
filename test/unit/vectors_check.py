"""Checks docs/test-vectors.json from Python: the SDK's verifiers, and an implementation of
every other format written from docs/formats.md (not from licensd's code).

Usage: python3 vectors_check.py docs/test-vectors.json
Prints {"<section>": {"checked": n, "failures": ["…"]}, …} as JSON; exits 0 when it ran.
"""
import base64
import hashlib
import hmac
import json
import os
import re
import sys
from datetime import datetime
from unittest import mock

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "clients", "python", "src"))
sys.path.insert(0, os.path.join(ROOT, "gen", "python"))

from cryptography.exceptions import InvalidSignature, InvalidTag  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: E402

from licensd_client import offline_activation, verify_lease, verify_license_file  # noqa: E402
from licensd_client.audit import (  # noqa: E402
    GENESIS_HASH, entry_fields, entry_hash, leaf_hash, tree_hash, verify_checkpoint, verify_consistency, verify_inclusion,
)
from licensd_client.jcs import canonical_json  # noqa: E402
from licensd_client.validation import validation_signing_bytes, verify_validation_response  # noqa: E402

vectors = json.load(open(sys.argv[1], encoding="utf-8"))
report = {}


class Section:
    def __init__(self, name):
        self.name = name
        self.checked = 0
        self.failures = []
        report[name] = self

    def check(self, label, ok):
        self.checked += 1
        if not ok:
            self.failures.append(label)

    def expect(self, label, got, want):
        self.checked += 1
        if got != want:
            self.failures.append(f"{label}: got {got!r}, want {want!r}")


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt or None, info=info).derive(ikm)


def moment(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


ed_keys = {k["kid"]: bytes.fromhex(k["public_key_hex"]) for k in vectors["keys"]["ed25519"]}
data_key = bytes.fromhex(vectors["keys"]["data_key_hex"])


def published(kids):
    return {kid: ed_keys[kid] for kid in kids or []}


def ed25519_ok(public_key, signature, message):
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


# ---------------------------------------------------------------- the SDK's verifiers

s = Section("sdk.license_files")
for c in vectors["license_files"]["cases"]:
    r = verify_license_file(
        c["file"], keys=published(c.get("keys")), hmac_secret=c.get("hmac_secret"), allow_hmac=c.get("allow_hmac", False),
        license_key=c.get("license_key"), fingerprint=c.get("fingerprint"), now=moment(c["now"]),
    )
    s.expect(c["name"], r.code, c["expect"])

s = Section("sdk.leases")
for c in vectors["leases"]["cases"]:
    s.expect(c["name"], verify_lease(c["token"], published(c["keys"]), c["fingerprint"], now=moment(c["now"])).code, c["expect"])

s = Section("sdk.offline_requests")
for r in vectors["offline_activation"]["requests"]:
    # The SDK writes the same bytes as licensd, given the same clock and nonce.
    request = json.loads(r["request_json"])
    with mock.patch.object(offline_activation.os, "urandom", lambda n: b64url(request["nonce"])):
        text = offline_activation.create_offline_activation_request(
            r["key"], request["fingerprint"], hostname=request["hostname"], platform=request["platform"], cores=request["cores"], now=moment(request["created_at"]),
        )
    s.expect(r["name"], text, r["text"])

# ---------------------------------------------------------------- independent: from docs/formats.md

VINZY = re.compile(r"^[A-Z0-9]{3}(-[A-Z2-7]{5}){7}$")
CUSTOM = re.compile(r"^[A-Za-z0-9._-]{16,128}$")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def normalise(key):
    stripped = key.strip()
    return stripped.upper() if VINZY.match(stripped.upper()) else stripped


def key_hmac(secret, body):
    return base64.b32encode(hmac.new(secret.encode("utf-8"), body.encode("ascii"), hashlib.sha256).digest()).decode("ascii").rstrip("=")[:10]


def check_key(key, keyring):
    """(verdict, normalised key) as docs/formats.md "License keys" describes."""
    key = normalise(key)
    if VINZY.match(key):
        given = key[34:39] + key[40:45]
        matched = [hmac.compare_digest(key_hmac(secret, key[:33]), given) for secret in keyring.values()]
        return ("VALID" if any(matched) else "SIGNATURE_INVALID"), key
    return ("VALID" if CUSTOM.match(key) else "FORMAT_INVALID"), key


s = Section("independent.license_keys")
keyring = vectors["license_keys"]["keyring"]
for v in vectors["license_keys"]["vectors"]:
    verdict, key = check_key(v["input"], keyring)
    ok = verdict == v["expect"]
    if ok and verdict == "VALID":
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        ok = key == v["normalized"] and digest.hex() == v["digest_hex"] and b64url_encode(digest) == v["digest_base64url"]
        ok = ok and (v["kind"] == "vinzy") == bool(VINZY.match(key))
        if v["kind"] == "vinzy":
            ok = ok and ALPHABET.index(key[4]) == v["version"] and key[:3] == v["product_code"] and key[:33] == v["hmac_input"]
    s.check(v["name"], ok)

s = Section("independent.derivations")
d = vectors["derivations"]
v0 = hkdf(data_key, b"", b"licensd license key hmac v0").hex()
s.check("default version-0 secret is the hex text of HKDF(data key)", v0 == d["license_key_hmac_v0"]["secret"] and check_key(d["license_key_hmac_v0"]["key_signed_with_it"], {"0": v0})[0] == "VALID")
dk1 = hkdf(data_key, b"", b"licensd audit hmac v1")
s.check("dk1 = HKDF(data key)", hmac.new(dk1, bytes.fromhex(d["audit_dk1"]["probe_hash_hex"]), hashlib.sha256).hexdigest() == d["audit_dk1"]["hmac_hex"] and dk1.hex() == vectors["audit"]["hmac_keys_hex"]["dk1"])

s = Section("independent.license_files")
file_secret = vectors["keys"]["license_file_hmac_secret"].encode("utf-8")
for name, f in vectors["license_files"]["issued"].items():
    signed = f["file"]
    ok = True
    if signed.startswith("licensd1e."):
        e = f["encryption"]
        _, iv, body = signed.split(".")
        key = hkdf(normalise(e["license_key"]).encode("utf-8"), b"licensd1e", b"license file")
        raw = b64url(body)
        try:
            signed = AESGCM(key).decrypt(b64url(iv), raw, b"licensd1e").decode("utf-8")
        except InvalidTag:
            signed = ""
        ok = key.hex() == e["file_key_hex"] and signed == e["plaintext"] and raw[-16:].hex() == e["tag_hex"] and b64url(iv).hex() == e["iv_hex"]
    parts = signed.split(".")
    ok = ok and len(parts) == 3 and f"{parts[0]}.{parts[1]}" == f["signing_input"] and b64url(parts[1]).decode("utf-8") == f["payload_json"]
    if ok:
        payload = json.loads(b64url(parts[1]))
        signature = b64url(parts[2])
        if parts[0] == "licensd1h":
            ok = payload["kid"] == "hmac" and hmac.compare_digest(hmac.new(file_secret, f["signing_input"].encode("ascii"), hashlib.sha256).digest(), signature)
        else:
            ok = parts[0] == "licensd1" and ed25519_ok(ed_keys[payload["kid"]], signature, f["signing_input"].encode("ascii"))
    s.check(name, ok)

s = Section("independent.offline_requests")
for c in vectors["offline_activation"]["cases"]:
    parts = c["text"].strip().split(".")
    verdict = "MALFORMED"
    if len(parts) == 3 and parts[0] == "licensd-req1":
        try:
            request = json.loads(b64url(parts[1]))
        except ValueError:
            request = None
        if isinstance(request, dict) and request.get("v") == 1 and request.get("typ") == "activation_request":
            key = normalise(c["key"])
            mac = hmac.new(key.encode("utf-8"), f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256).digest()
            verdict = "VALID" if hmac.compare_digest(mac, b64url(parts[2])) else "BAD_MAC"
            if verdict == "VALID" and request["key_digest"] != b64url_encode(hashlib.sha256(key.encode("utf-8")).digest()):
                verdict = "WRONG_DIGEST"
    s.expect(c["name"], verdict, c["expect"])

s = Section("independent.validate_license")
try:
    from google.protobuf import json_format  # noqa: E402
    from licensd.licensing.v1 import licensing_service_pb2  # noqa: E402
except ImportError as err:  # the binary path needs the generated code; the JSON path does not
    json_format = None
    print(f"generated Python code unavailable: {err}", file=sys.stderr)
for name, a in vectors["validate_license"]["answers"].items():
    ok = validation_signing_bytes(a["response_json"]).decode("utf-8") == a["signing_text"]
    ok = ok and verify_validation_response(a["response_json"], ed_keys, nonce=a["request"].get("nonce", ""))
    if json_format is not None:
        message = licensing_service_pb2.ValidateLicenseResponse.FromString(base64.b64decode(a["response_binary_base64"]))
        ok = ok and validation_signing_bytes(json_format.MessageToDict(message)).decode("utf-8") == a["signing_text"]
    else:
        ok = False
    s.check(f"answer {name}", ok)
for c in vectors["validate_license"]["cases"]:
    s.expect(c["name"], verify_validation_response(c["response_json"], published(c["keys"])), c["expect"])

s = Section("independent.audit_entries")
audit_keys = {kid: bytes.fromhex(k) for kid, k in vectors["audit"]["hmac_keys_hex"].items()}


def first_problem(chain):
    prev = GENESIS_HASH
    for e in chain:
        stored = base64.b64decode(e["hash"])
        if entry_hash(e) != stored:
            return int(e["seq"]), "HASH_MISMATCH"
        if base64.b64decode(e.get("prevHash", "")) != prev:
            return int(e["seq"]), "BROKEN_LINK"
        key = audit_keys.get(e.get("kid", ""))
        if key is None or not hmac.compare_digest(hmac.new(key, stored, hashlib.sha256).digest(), base64.b64decode(e["signature"])):
            return int(e["seq"]), "BAD_SIGNATURE"
        prev = stored
    return None


entries = vectors["audit"]["entries"]
for e in entries:
    fields = entry_fields(e["api_json"])
    s.check(
        f"entry {e['seq']}",
        canonical_json(fields) == e["canonical_json"] and entry_hash(e["api_json"]).hex() == e["hash_hex"] and leaf_hash(bytes.fromhex(e["hash_hex"])).hex() == e["leaf_hash_hex"]
        and hmac.new(audit_keys[e["kid"]], bytes.fromhex(e["hash_hex"]), hashlib.sha256).hexdigest() == e["signature_hex"],
    )
s.expect("the untouched chain", first_problem([e["api_json"] for e in entries]), None)
for t in vectors["audit"]["tampered_entries"]:
    chain = [t["api_json"] if e["seq"] == t["seq"] else e["api_json"] for e in entries]
    s.expect(t["name"], first_problem(chain), (t["seq"], t["expect"]))

s = Section("independent.checkpoints")
for c in vectors["audit"]["checkpoint_cases"]:
    s.expect(c["name"], verify_checkpoint(c["api_json"], published(c["keys"])), c["expect"])
cut = vectors["audit"]["retention_cut"]
cut_ms = int(datetime.fromisoformat(cut["cut_at"].replace("Z", "+00:00")).timestamp() * 1000)
cut_text = f"licensd.dev/audit-cut/v1\n{vectors['audit']['tenant_id']}\n{cut['seq']}\n{cut['hash_hex']}\n{cut_ms}\n"
s.check("retention cut", cut_text == cut["signed_text"] and ed25519_ok(ed_keys[cut["kid"]], bytes.fromhex(cut["signature_hex"]), cut_text.encode("utf-8")))

s = Section("independent.merkle")
leaves = [bytes.fromhex(e["leaf_hash_hex"]) for e in entries]
roots = {r["tree_size"]: bytes.fromhex(r["root_hex"]) for r in vectors["audit"]["roots"]}
for r in vectors["audit"]["roots"]:
    s.expect(f"audit root of size {r['tree_size']}", tree_hash(leaves[: r["tree_size"]]).hex(), r["root_hex"])
ct = vectors["merkle"]
ct_leaves = [leaf_hash(bytes.fromhex(x)) for x in ct["leaves_hex"]]
for r in ct["roots"]:
    s.expect(f"CT root of size {r['tree_size']}", tree_hash(ct_leaves[: r["tree_size"]]).hex(), r["root_hex"])
for p in vectors["audit"]["inclusion_proofs"]:
    got = verify_inclusion(leaf_hash(bytes.fromhex(p["entry_hash_hex"])), p["leaf_index"], p["tree_size"], [bytes.fromhex(h) for h in p["proof_hex"]], roots[p["tree_size"]])
    s.expect(p.get("name", f"inclusion of {p['seq']} in {p['tree_size']}"), got, p["expect"])
for p in vectors["audit"]["consistency_proofs"]:
    got = verify_consistency(p["old_size"], p["new_size"], [bytes.fromhex(h) for h in p["proof_hex"]], roots[p["old_size"]], roots[p["new_size"]])
    s.expect(p.get("name", f"consistency of {p['old_size']} with {p['new_size']}"), got, p["expect"])

s = Section("independent.sealing")
for c in vectors["sealing"]["cases"]:
    sealed = bytes.fromhex(c["sealed_hex"])
    iv, tag, ciphertext = sealed[:12], sealed[12:28], sealed[28:]
    try:
        plaintext = AESGCM(data_key).decrypt(iv, ciphertext + tag, c["aad"].encode("utf-8"))
    except InvalidTag:
        plaintext = None
    s.check(c["name"], (plaintext is not None) == c["expect"] and (plaintext is None or "plaintext_hex" not in c or plaintext.hex() == c["plaintext_hex"]))
api_key = vectors["sealing"]["api_key"]
s.check("API key digest", hashlib.sha256(api_key["secret"].encode("utf-8")).hexdigest() == api_key["digest_hex"])

print(json.dumps({name: {"checked": sec.checked, "failures": sec.failures} for name, sec in report.items()}, indent=2))
