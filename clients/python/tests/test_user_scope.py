"""The user-scope validation codes and the request's `user`, as the generated stubs carry them."""
from __future__ import annotations

import unittest

from licensd.licensing.v1 import licensing_service_pb2 as lic


class UserScopeTest(unittest.TestCase):
    def test_codes(self) -> None:
        self.assertEqual(lic.ValidationCode.Value("VALIDATION_CODE_USER_SCOPE_REQUIRED"), 16)
        self.assertEqual(lic.ValidationCode.Value("VALIDATION_CODE_USER_SCOPE_MISMATCH"), 17)
        answer = lic.ValidateLicenseResponse(valid=False, code=lic.VALIDATION_CODE_USER_SCOPE_MISMATCH)
        self.assertEqual(lic.ValidationCode.Name(answer.code).removeprefix("VALIDATION_CODE_"), "USER_SCOPE_MISMATCH")

    def test_request_user(self) -> None:
        req = lic.ValidateLicenseRequest(key="k", user="ada@example.com")
        self.assertEqual(lic.ValidateLicenseRequest.FromString(req.SerializeToString()).user, "ada@example.com")
        self.assertEqual(lic.AddLicenseUserRequest(license_id="lic_x", user="u").user, "u")


if __name__ == "__main__":
    unittest.main()
