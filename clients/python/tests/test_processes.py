"""The process validation code and the process messages, as the generated stubs carry them."""
from __future__ import annotations

import unittest

from licensd.activation.v1 import activation_service_pb2 as act
from licensd.activation.v1 import process_pb2
from licensd.licensing.v1 import licensing_service_pb2 as lic


class ProcessesTest(unittest.TestCase):
    def test_code(self) -> None:
        self.assertEqual(lic.ValidationCode.Value("VALIDATION_CODE_TOO_MANY_PROCESSES"), 18)
        answer = lic.ValidateLicenseResponse(valid=False, code=lic.VALIDATION_CODE_TOO_MANY_PROCESSES)
        self.assertEqual(lic.ValidationCode.Name(answer.code).removeprefix("VALIDATION_CODE_"), "TOO_MANY_PROCESSES")

    def test_messages(self) -> None:
        req = act.SpawnProcessRequest(key="k", fingerprint="fp", pid="4242")
        self.assertEqual(act.SpawnProcessRequest.FromString(req.SerializeToString()).pid, "4242")
        self.assertEqual(act.ConnectLeaseRequest(key="k", fingerprint="fp", process_pid="1").process_pid, "1")
        proc = process_pb2.Process(id="proc_x", status=process_pb2.PROCESS_STATUS_ALIVE)
        self.assertEqual(process_pb2.ProcessStatus.Name(proc.status), "PROCESS_STATUS_ALIVE")


if __name__ == "__main__":
    unittest.main()
