"""LicenseGuard against a live licensd: activation, the ConnectLease stream, the cache file,
a pushed revocation. The offline half (the server stopped) is test_guard_offline.py."""
from __future__ import annotations

import json
import os
import stat
import tempfile
import time
import unittest

from support import URL, fixture, live

from licensd_client import Client, LicenseGuard, LicenseInfo


def until(predicate, what: str, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@live
class Guard(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.f = fixture()

    def test_online_then_cached(self) -> None:
        directory = os.environ.get("LICENSD_TEST_STATE_DIR") or tempfile.mkdtemp()
        cache = os.path.join(directory, "guard", "lease.json")
        changes = []
        guard = LicenseGuard(Client(URL), self.f.license_key, "py-guard-host", cache, heartbeat_interval=0.5, on_change=changes.append)
        self.assertEqual(guard.info().code, "NO_LEASE")  # nothing cached, not started
        with guard:
            self.assertTrue(guard.running)
            # The stream opens (online) just before its first lease is verified and stored: wait for both.
            info = until(lambda: guard.info() if guard.info().online and guard.info().valid else None, "the lease stream")
            self.assertEqual((info.valid, info.code, info.tier), (True, "VALID", "pro"))
            self.assertTrue(guard.has_feature("reports"))
            self.assertFalse(guard.has_feature("export"))
            self.assertIsNotNone(info.expiry)
            self.assertTrue(info.machine_id and info.machine_id.startswith("mach_"))
            # on_change runs on the guard's thread after the state changed: wait for it, do not race it.
            until(lambda: any(c.online for c in changes), "an on_change call with the stream open")
        self.assertFalse(guard.running)
        self.assertFalse(guard.info().online)
        self.assertTrue(guard.info().valid, "stopping keeps the lease")
        self.assertEqual(stat.S_IMODE(os.stat(cache).st_mode), 0o600)
        with open(cache, encoding="utf-8") as f:
            cached = json.load(f)
        self.assertEqual(cached["v"], 1)
        self.assertTrue(cached["lease"].startswith("licensd1."))
        self.assertTrue(cached["keys"])
        # The state the offline half needs once the server is stopped.
        with open(os.path.join(directory, "guard", "state.json"), "w", encoding="utf-8") as f:
            json.dump({"cache": cache, "key": self.f.license_key, "fingerprint": "py-guard-host", "machine_id": info.machine_id}, f)

    def test_a_suspension_is_pushed(self) -> None:
        license_id, key = self.f.new_license()
        cache = os.path.join(tempfile.mkdtemp(), "lease.json")
        with LicenseGuard(Client(URL), key, "py-suspended-host", cache, heartbeat_interval=0.5) as guard:
            until(lambda: guard.info().online, "the lease stream")
            with self.f.admin() as c:
                c.licensing.SuspendLicense(id=license_id)
            info = until(lambda: guard.info() if guard.info().code == "LICENSE_SUSPENDED" else None, "the revocation")
            self.assertFalse(info.valid)
            self.assertFalse(guard.has_feature("reports"))
        with open(cache, encoding="utf-8") as f:
            self.assertIsNone(json.load(f)["lease"], "the revoked lease left the cache")

    def test_a_wrong_key_stops_the_guard(self) -> None:
        cache = os.path.join(tempfile.mkdtemp(), "lease.json")
        with LicenseGuard(Client(URL), "not-a-real-license-key-0000", "py-host", cache, backoff_initial=0.05, backoff_max=0.2) as guard:
            info = until(lambda: guard.info() if guard.info().code != "NO_LEASE" else None, "a verdict")
            self.assertIsInstance(info, LicenseInfo)
            self.assertEqual((info.valid, info.code), (False, "INVALID_LICENSE_KEY"))
            until(lambda: not guard.running, "the guard to give up: reconnecting cannot help")


if __name__ == "__main__":
    unittest.main()
