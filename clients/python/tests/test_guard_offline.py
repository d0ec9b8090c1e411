"""LicenseGuard with licensd stopped: it answers from the cache test_guard.py left, until the lease expires.
Runs when LICENSD_TEST_GUARD_STATE names that state file (test/e2e/python-client.test.ts sets it after stopping the server)."""
from __future__ import annotations

import json
import os
import time
import unittest
from datetime import datetime, timedelta, timezone

from licensd_client import Client, LicenseGuard

STATE = os.environ.get("LICENSD_TEST_GUARD_STATE", "")


@unittest.skipUnless(STATE, "no offline guard state (LICENSD_TEST_GUARD_STATE)")
class OfflineGuard(unittest.TestCase):
    def setUp(self) -> None:
        with open(STATE, encoding="utf-8") as f:
            self.state = json.load(f)
        self.url = os.environ["LICENSD_TEST_URL"]

    def guard(self, **options) -> LicenseGuard:
        return LicenseGuard(Client(self.url, timeout=2), self.state["key"], self.state["fingerprint"], self.state["cache"], backoff_initial=0.05, backoff_max=0.2, **options)

    def test_answers_from_the_cache(self) -> None:
        with self.guard() as guard:
            info = guard.info()
            self.assertEqual((info.valid, info.code, info.online), (True, "VALID", False))
            self.assertTrue(guard.has_feature("reports"))
            self.assertFalse(guard.has_feature("export"))
            self.assertEqual(info.machine_id, self.state["machine_id"])
            deadline = time.monotonic() + 20
            while guard.info().error is None and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertIn("UNAVAILABLE", guard.info().error or "", "it says why it is offline")
            self.assertTrue(guard.info().valid, "and keeps answering from the cache")

    def test_until_the_lease_expires(self) -> None:
        with self.guard() as guard:
            expiry = guard.info().expiry
            self.assertIsNotNone(expiry)
        later = self.guard(now=lambda: expiry + timedelta(seconds=1))
        with later:
            info = later.info()
            self.assertEqual((info.valid, info.code), (False, "EXPIRED"))
            self.assertFalse(later.has_feature("reports"))
        broken_clock = self.guard(now=lambda: 1 / 0)
        self.assertFalse(broken_clock.start().info().valid, "an unreadable clock is past every expiry")
        broken_clock.stop()
        self.assertGreater(expiry, datetime.now(timezone.utc))


if __name__ == "__main__":
    unittest.main()
