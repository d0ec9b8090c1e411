"""The verifiers on what a live licensd issues: license files, leases, signed validation
answers (nonce), audit proofs; and SigningKeys following a key rotation."""
from __future__ import annotations

import time
import unittest
import uuid

from licensd.audit.v1 import audit_service_pb2 as audit_pb
from support import SUPER_ADMIN_KEY, URL, fixture, live

from licensd_client import (
    Client,
    SigningKeys,
    license_info,
    verify_audit_proof,
    verify_lease,
    verify_license_file,
    verify_validation_response,
)


@live
class LiveVerifiers(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.f = fixture()

    def setUp(self) -> None:
        self.keys = self.f.current_keys()

    def test_license_file(self) -> None:
        with self.f.admin() as c:
            issued = c.licensing.IssueLicenseFile(license_id=self.f.license_id, fingerprint="py-host-1")
        result = verify_license_file(issued.license_file, keys=self.keys, fingerprint="py-host-1")
        self.assertEqual(result.code, "VALID")
        self.assertEqual(result.payload["license_id"], self.f.license_id)
        self.assertTrue(result.has_feature("reports"))
        self.assertFalse(result.has_feature("export"))
        self.assertEqual(verify_license_file(issued.license_file, keys=self.keys, fingerprint="another-host").code, "FINGERPRINT_MISMATCH")
        head, body, sig = issued.license_file.split(".")
        self.assertEqual(verify_license_file(f"{head}.{body}.{sig[:-4]}AAAA", keys=self.keys, fingerprint="py-host-1").code, "BAD_SIGNATURE")
        info = license_info(issued.license_file, self.keys, fingerprint="py-host-1")
        self.assertEqual((info.valid, info.code, info.tier, info.license_id), (True, "VALID", "pro", self.f.license_id))
        self.assertEqual(info.features, ("reports",))

    def test_lease_from_activation(self) -> None:
        with Client(URL) as c:  # public: the license key is the credential
            res = c.activation.Activate(key=self.f.license_key, fingerprint="py-lease-host")
        self.assertEqual(verify_lease(res.lease.token, self.keys, "py-lease-host").code, "VALID")
        self.assertEqual(verify_lease(res.lease.token, self.keys, "someone-else").code, "FINGERPRINT_MISMATCH")
        self.assertEqual(verify_lease(res.lease.token, {}, "py-lease-host").code, "UNKNOWN_KEY")
        self.assertEqual(verify_license_file(res.lease.token, keys=self.keys, fingerprint="py-lease-host").code, "MALFORMED")
        info = license_info(res.lease.token, self.keys, lease=True, fingerprint="py-lease-host")
        self.assertTrue(info.valid and info.has_feature("reports") and info.machine_id)

    def test_validation_answer_with_nonce(self) -> None:
        nonce = uuid.uuid4().hex
        with Client(URL) as c:
            answer = c.licensing.ValidateLicense(key=self.f.license_key, nonce=nonce, entitlements=["reports"])
        self.assertTrue(answer.valid)
        self.assertTrue(verify_validation_response(answer, self.keys, nonce=nonce))
        self.assertFalse(verify_validation_response(answer, self.keys, nonce="another-nonce"))
        answer.valid = False  # an answer altered on the way
        self.assertFalse(verify_validation_response(answer, self.keys, nonce=nonce))

    def test_audit_inclusion_and_consistency(self) -> None:
        with self.f.admin() as c:
            first = c.audit.GetCheckpoint().checkpoint
            events = sorted(c.audit.ListAuditEvents(page_size=1000).events, key=lambda e: e.seq)
            self.assertEqual(len(events), first.tree_size)
            for e in events:
                proof = c.audit.GetInclusionProof(seq=e.seq, tree_size=first.tree_size)
                self.assertEqual(verify_audit_proof(first, self.keys, entry=e, inclusion=proof).code, "VALID", e.type)
            c.licensing.CreateCustomer(name="Audit Py", email="audit-py@example.com")
            second = c.audit.GetCheckpoint().checkpoint
            consistency = c.audit.GetConsistencyProof(old_size=first.tree_size, new_size=second.tree_size)
            self.assertEqual(second.tree_size, first.tree_size + 1)
            self.assertEqual(verify_audit_proof(second, self.keys, previous=first, consistency=consistency).code, "VALID")
            # A proof for another entry, or a checkpoint with a changed root, does not verify.
            wrong = c.audit.GetInclusionProof(seq=events[0].seq, tree_size=first.tree_size)
            if len(events) > 1:
                self.assertEqual(verify_audit_proof(first, self.keys, entry=events[1], inclusion=wrong).code, "NOT_INCLUDED")
            forged = audit_pb.GetCheckpointResponse(checkpoint=second).checkpoint
            forged.root_hash = bytes(32)
            self.assertEqual(verify_audit_proof(forged, self.keys, previous=first, consistency=consistency).code, "BAD_CHECKPOINT")

    def test_signing_keys_follow_a_rotation(self) -> None:
        with Client(URL) as public:
            keys = SigningKeys(public, ttl=3600, min_refetch_interval=0)
            before = keys.get()
            self.assertEqual(keys.fetches, 1)
            with Client(URL, api_key=SUPER_ADMIN_KEY) as root:
                rotated = root.activation.RotateSigningKey()
            self.assertNotIn(rotated.key.kid, before)
            # A license file signed after the rotation names the new kid: one refetch, then it verifies.
            with self.f.admin() as c:
                for _ in range(50):
                    issued = c.licensing.IssueLicenseFile(license_id=self.f.license_id)
                    if issued.kid == rotated.key.kid:
                        break
                    time.sleep(0.2)  # every instance signs with the new key within a minute
            self.assertEqual(issued.kid, rotated.key.kid)
            self.assertEqual(keys.verify_license_file(issued.license_file).code, "VALID")
            self.assertEqual(keys.fetches, 2)
            self.assertEqual(keys.verify_license_file(issued.license_file).code, "VALID")
            self.assertEqual(keys.fetches, 2)


if __name__ == "__main__":
    unittest.main()
