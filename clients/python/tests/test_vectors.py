"""The package's verifiers against docs/test-vectors.json, the vectors every implementation shares."""
from __future__ import annotations

import json
import unittest
from datetime import datetime

from support import VECTORS

from licensd_client import (
    SigningKeys,
    canonical_json,
    verify_audit_proof,
    verify_checkpoint,
    verify_consistency,
    verify_inclusion,
    verify_lease,
    verify_license_file,
    verify_validation_response,
)
from licensd_client.audit import entry_hash, leaf_hash


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Vectors(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        with open(VECTORS, encoding="utf-8") as f:
            cls.v = json.load(f)
        cls.ed_keys = {k["kid"]: bytes.fromhex(k["public_key_hex"]) for k in cls.v["keys"]["ed25519"]}

    def published(self, kids):
        return {kid: self.ed_keys[kid] for kid in kids or []}

    def test_license_files(self) -> None:
        cases = self.v["license_files"]["cases"]
        self.assertGreater(len(cases), 10)
        for c in cases:
            with self.subTest(c["name"]):
                r = verify_license_file(
                    c["file"], keys=self.published(c.get("keys")), hmac_secret=c.get("hmac_secret"),
                    allow_hmac=c.get("allow_hmac", False), license_key=c.get("license_key"),
                    fingerprint=c.get("fingerprint"), now=moment(c["now"]),
                )
                self.assertEqual(r.code, c["expect"])

    def test_leases(self) -> None:
        for c in self.v["leases"]["cases"]:
            with self.subTest(c["name"]):
                r = verify_lease(c["token"], self.published(c["keys"]), c["fingerprint"], now=moment(c["now"]))
                self.assertEqual(r.code, c["expect"])

    def test_validation_answers_with_their_nonce(self) -> None:
        for name, a in self.v["validate_license"]["answers"].items():
            with self.subTest(name):
                nonce = a["request"].get("nonce", "")
                self.assertTrue(verify_validation_response(a["response_json"], self.ed_keys, nonce=nonce))
                self.assertFalse(verify_validation_response(a["response_json"], self.ed_keys, nonce=nonce + "-replayed"))
                # The signed scope is the request's: checked when given, another machine's or user's fails.
                r = a["request"]
                scope = {
                    "product_code": r.get("productCode", ""),
                    "fingerprint": r.get("fingerprint", ""),
                    "user": r.get("user", ""),
                    "entitlements": r.get("entitlements", []),
                }
                self.assertTrue(verify_validation_response(a["response_json"], self.ed_keys, nonce=nonce, **scope))
                self.assertFalse(
                    verify_validation_response(
                        a["response_json"], self.ed_keys, nonce=nonce, fingerprint=scope["fingerprint"] + "-other"
                    )
                )
                self.assertFalse(verify_validation_response(a["response_json"], self.ed_keys, nonce=nonce, user="eve"))
                self.assertTrue(verify_validation_response(a["response_json"], self.ed_keys, nonce=nonce, components=[]))
                disk = [{"name": "disk", "fingerprint": "d-1"}]
                self.assertFalse(verify_validation_response(a["response_json"], self.ed_keys, nonce=nonce, components=disk))
        for c in self.v["validate_license"]["cases"]:
            with self.subTest(c["name"]):
                self.assertEqual(verify_validation_response(c["response_json"], self.published(c["keys"])), c["expect"])

    def test_audit_entries_checkpoints_and_proofs(self) -> None:
        audit = self.v["audit"]
        for e in audit["entries"]:
            self.assertEqual(entry_hash(e["api_json"]).hex(), e["hash_hex"])
            self.assertEqual(canonical_json({"b": 1, "a": [e["seq"]]}), '{"a":[%d],"b":1}' % e["seq"])
        for c in audit["checkpoint_cases"]:
            with self.subTest(c["name"]):
                self.assertEqual(verify_checkpoint(c["api_json"], self.published(c["keys"])), c["expect"])
        roots = {r["tree_size"]: bytes.fromhex(r["root_hex"]) for r in audit["roots"]}
        for p in audit["inclusion_proofs"]:
            with self.subTest(f"inclusion {p['seq']} in {p['tree_size']}"):
                got = verify_inclusion(leaf_hash(bytes.fromhex(p["entry_hash_hex"])), p["leaf_index"], p["tree_size"], [bytes.fromhex(h) for h in p["proof_hex"]], roots[p["tree_size"]])
                self.assertEqual(got, p["expect"])
        for p in audit["consistency_proofs"]:
            with self.subTest(f"consistency {p['old_size']} → {p['new_size']}"):
                got = verify_consistency(p["old_size"], p["new_size"], [bytes.fromhex(h) for h in p["proof_hex"]], roots[p["old_size"]], roots[p["new_size"]])
                self.assertEqual(got, p["expect"])

    def test_verify_audit_proof_against_the_signed_checkpoint(self) -> None:
        """Every vector entry is in the signed checkpoint of the full log; a tampered entry or checkpoint is not."""
        audit = self.v["audit"]
        checkpoint = max(audit["checkpoints"], key=lambda c: c["tree_size"])
        size = checkpoint["tree_size"]
        proofs = {p["seq"]: p for p in audit["inclusion_proofs"] if p["tree_size"] == size and p["expect"]}
        entries = {e["seq"]: e["api_json"] for e in audit["entries"]}
        self.assertTrue(proofs, "the vectors hold inclusion proofs for the checkpoint's size")
        for seq, p in proofs.items():
            with self.subTest(seq=seq):
                hashes = [bytes.fromhex(h) for h in p["proof_hex"]]
                self.assertEqual(verify_audit_proof(checkpoint["api_json"], self.ed_keys, entry=entries[seq], inclusion=hashes).code, "VALID")
                altered = dict(entries[seq], subject="someone-else")
                self.assertEqual(verify_audit_proof(checkpoint["api_json"], self.ed_keys, entry=altered, inclusion=hashes).code, "NOT_INCLUDED")
        forged = dict(checkpoint["api_json"], treeSize=str(size + 1))
        self.assertEqual(verify_audit_proof(forged, self.ed_keys).code, "BAD_CHECKPOINT")
        self.assertEqual(verify_audit_proof(checkpoint["api_json"], {}).code, "BAD_CHECKPOINT")
        # Consistency between two signed checkpoints of the vectors.
        smaller = [c for c in audit["checkpoints"] if c["tree_size"] < size]
        for old in smaller:
            proof = next((p for p in audit["consistency_proofs"] if p["old_size"] == old["tree_size"] and p["new_size"] == size and p["expect"]), None)
            if proof is None:
                continue
            hashes = [bytes.fromhex(h) for h in proof["proof_hex"]]
            self.assertEqual(verify_audit_proof(checkpoint["api_json"], self.ed_keys, previous=old["api_json"], consistency=hashes).code, "VALID")
            self.assertEqual(verify_audit_proof(checkpoint["api_json"], self.ed_keys, previous=old["api_json"], consistency=hashes[:-1] or [bytes(32)]).code, "INCONSISTENT")

    def test_signing_keys_refetch_once_for_an_unknown_kid(self) -> None:
        """A rotation: a lease signed by a key the cache has not seen makes it fetch the keys again, once."""
        case = next(c for c in self.v["leases"]["cases"] if c["expect"] == "VALID")
        kid = verify_lease(case["token"], self.ed_keys, case["fingerprint"], now=moment(case["now"])).payload["kid"]
        published = {k: v for k, v in self.ed_keys.items() if k != kid}
        calls = []

        def fetch():
            calls.append(1)
            return dict(published)

        keys = SigningKeys(fetch, ttl=3600, min_refetch_interval=0)
        self.assertEqual(keys.verify_lease(case["token"], case["fingerprint"], now=moment(case["now"])).code, "UNKNOWN_KEY")
        self.assertEqual(len(calls), 2, "the first fetch, then one refetch for the unknown kid")
        published[kid] = self.ed_keys[kid]  # the rotation reaches the server's published set
        self.assertEqual(keys.verify_lease(case["token"], case["fingerprint"], now=moment(case["now"])).code, "VALID")
        self.assertEqual(len(calls), 3)
        # Within the TTL, a known kid costs no fetch.
        self.assertEqual(keys.verify_lease(case["token"], case["fingerprint"], now=moment(case["now"])).code, "VALID")
        self.assertEqual(len(calls), 3)
        # Unknown kids are refetched at most once per min_refetch_interval.
        slow = SigningKeys(fetch, ttl=3600, min_refetch_interval=60)
        for _ in range(5):
            slow.for_kid("sk_made_up")
        self.assertEqual(len(calls), 4)


if __name__ == "__main__":
    unittest.main()
