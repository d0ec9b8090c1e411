"""Core-based seats and machine uniqueness scope, as the generated stubs carry them."""
from __future__ import annotations

import unittest

from licensd.licensing.v1 import licensing_service_pb2 as lic
from licensd.licensing.v1 import policy_pb2 as pol


class MachineScopeTest(unittest.TestCase):
    def test_too_many_cores(self) -> None:
        self.assertEqual(lic.ValidationCode.Value("VALIDATION_CODE_TOO_MANY_CORES"), 19)
        answer = lic.ValidateLicenseResponse(valid=False, code=lic.VALIDATION_CODE_TOO_MANY_CORES)
        self.assertEqual(lic.ValidationCode.Name(answer.code).removeprefix("VALIDATION_CODE_"), "TOO_MANY_CORES")

    def test_policy_fields(self) -> None:
        req = lic.CreatePolicyRequest(
            product_id="prod_x",
            name="trial",
            machine_uniqueness_scope=pol.MACHINE_UNIQUENESS_SCOPE_PRODUCT,
            max_cores=16,
        )
        back = lic.CreatePolicyRequest.FromString(req.SerializeToString())
        self.assertEqual(back.machine_uniqueness_scope, pol.MACHINE_UNIQUENESS_SCOPE_PRODUCT)
        self.assertEqual(back.max_cores, 16)
        self.assertEqual(pol.Policy().machine_uniqueness_scope, pol.MACHINE_UNIQUENESS_SCOPE_UNSPECIFIED)


if __name__ == "__main__":
    unittest.main()
