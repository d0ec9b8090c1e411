"""The components-scope validation codes and the requests' `components`, as the generated stubs carry them."""
from __future__ import annotations

import unittest

from licensd.activation.v1 import activation_service_pb2 as act
from licensd.activation.v1 import machine_pb2 as machine
from licensd.licensing.v1 import licensing_service_pb2 as lic
from licensd.licensing.v1 import policy_pb2 as policy


class ComponentsScopeTest(unittest.TestCase):
    def test_codes(self) -> None:
        self.assertEqual(lic.ValidationCode.Value("VALIDATION_CODE_COMPONENTS_SCOPE_MISMATCH"), 20)
        self.assertEqual(lic.ValidationCode.Value("VALIDATION_CODE_COMPONENTS_SCOPE_REQUIRED"), 21)
        answer = lic.ValidateLicenseResponse(valid=False, code=lic.VALIDATION_CODE_COMPONENTS_SCOPE_MISMATCH)
        self.assertEqual(
            lic.ValidationCode.Name(answer.code).removeprefix("VALIDATION_CODE_"), "COMPONENTS_SCOPE_MISMATCH"
        )

    def test_request_components(self) -> None:
        req = lic.ValidateLicenseRequest(
            key="k", fingerprint="fp", components=[lic.Component(name="disk", fingerprint="d-1")]
        )
        back = lic.ValidateLicenseRequest.FromString(req.SerializeToString())
        self.assertEqual([(c.name, c.fingerprint) for c in back.components], [("disk", "d-1")])
        activate = act.ActivateRequest(key="k", fingerprint="fp", components=[machine.Component(name="board")])
        self.assertEqual(activate.components[0].name, "board")
        pol = policy.Policy(
            component_matching_strategy=policy.COMPONENT_MATCHING_STRATEGY_MATCH_MOST, require_components_scope=True
        )
        self.assertEqual(pol.component_matching_strategy, 3)


if __name__ == "__main__":
    unittest.main()
