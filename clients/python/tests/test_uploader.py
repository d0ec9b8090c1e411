"""UsageUploader: the spool on disk, and against a live licensd: upload, rejections, and an
agent SIGKILLed mid-upload whose restart gets every event counted exactly once."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from google.protobuf import timestamp_pb2
from licensd.usage.v1 import usage_service_pb2 as usage_pb
from support import HERE, URL, fixture, live

from licensd_client import Client, LicenseGuard, SpoolFull, UsageUploader


def summary(f, license_id: str):
    """(events, sum) of the tokens metric for the license over the last day, as licensd counts them."""
    start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    now = datetime.now(timezone.utc)
    start.FromDatetime(now - timedelta(days=1))
    end.FromDatetime(now + timedelta(hours=1))
    with f.admin() as c:
        res = c.usage.GetUsageSummary(license_id=license_id, metric="tokens", start_time=start, end_time=end, bucket=usage_pb.BUCKET_DAY)
    return sum(b.events for b in res.buckets), res.total


class CuttableProxy:
    """A loopback TCP proxy to licensd whose connections can be cut, as a flaky network would."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list = []
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def cut(self) -> None:
        self.cuts += 1
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.sockets = []

    def close(self) -> None:
        self.listener.close()
        self.cut()


class Spool(unittest.TestCase):
    """What record() leaves on disk, with no server at all (nothing is sent until start())."""

    def uploader(self, spool: str, **options) -> UsageUploader:
        return UsageUploader(Client("localhost:1"), spool, license_key="k" * 20, **options)

    def test_recorded_events_survive_a_restart(self) -> None:
        spool = tempfile.mkdtemp()
        u = self.uploader(spool)
        keys = [u.record("tokens", i) for i in range(5)]
        self.assertEqual(len(set(keys)), 5)
        u.stop()
        again = self.uploader(spool)
        self.assertEqual(again.pending, 5)
        self.assertEqual([e["k"] for e in again._pending.values()], keys, "same events, same keys, same order")
        again.stop()

    def test_a_torn_line_is_skipped(self) -> None:
        spool = tempfile.mkdtemp()
        u = self.uploader(spool)
        u.record("tokens", 1)
        u.stop()
        segment = next(n for n in os.listdir(spool) if n.startswith("seg-") and os.path.getsize(os.path.join(spool, n)))
        with open(os.path.join(spool, segment), "ab") as f:
            f.write(b'{"k":"half-writ')
        again = self.uploader(spool)
        self.assertEqual(again.pending, 1)
        again.stop()

    def test_bad_input_and_a_full_spool(self) -> None:
        spool = tempfile.mkdtemp()
        u = self.uploader(spool, max_spool_bytes=4096)
        for bad in (dict(metric=""), dict(metric="t", quantity=-1), dict(metric="t", quantity=1.5), dict(metric="t", quantity=True), dict(metric="t", attrs={"a": 1})):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                u.record(**bad)
        recorded = 0
        with self.assertRaises(SpoolFull):
            while True:
                u.record("tokens", 1, {"pad": "x" * 100})
                recorded += 1
        self.assertGreater(recorded, 10)
        self.assertEqual(u.pending, recorded, "a full spool refuses the new event and keeps every recorded one")
        self.assertLessEqual(u.spool_bytes, 4096)
        u.stop()

    def test_one_owner_per_spool(self) -> None:
        spool = tempfile.mkdtemp()
        u = self.uploader(spool)
        with self.assertRaisesRegex(RuntimeError, "another UsageUploader"):
            self.uploader(spool)
        u.stop()
        self.uploader(spool).stop()

    def test_license_must_be_named_once(self) -> None:
        with self.assertRaises(ValueError):
            UsageUploader(Client("localhost:1"), tempfile.mkdtemp())


@live
class Upload(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.f = fixture()

    def test_upload_and_rejections(self) -> None:
        license_id, key = self.f.new_license()
        spool = tempfile.mkdtemp()
        rejected = []
        with UsageUploader(Client(URL), spool, license_key=key, batch_size=7, idle_close=0.5, on_rejected=rejected.append) as u:
            for i in range(40):
                u.record("tokens", 2, {"i": str(i)})
            u.record("no-such-metric", 1)
            self.assertTrue(u.flush(30), u.last_error)
            self.assertEqual((u.accepted, u.duplicates, u.rejected), (40, 0, 1))
        self.assertEqual([(r.metric, r.reason) for r in rejected], [("no-such-metric", "UNKNOWN_METRIC")])
        self.assertEqual(summary(self.f, license_id), (40, 80))
        self.assertEqual(sorted(n for n in os.listdir(spool) if n.startswith("seg-") and os.path.getsize(os.path.join(spool, n))), [], "acknowledged events left the disk")

    def test_events_named_by_a_guards_lease(self) -> None:
        license_id, key = self.f.new_license()
        directory = tempfile.mkdtemp()
        with LicenseGuard(Client(URL), key, "py-usage-host", os.path.join(directory, "lease.json")) as guard:
            deadline = time.monotonic() + 20
            while guard.current_lease() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            with UsageUploader(Client(URL), os.path.join(directory, "spool"), lease=guard.current_lease, idle_close=0.2) as u:
                for _ in range(5):
                    u.record("tokens", 3, agent_id="leased")
                self.assertTrue(u.flush(30), u.last_error)
                self.assertEqual((u.accepted, u.rejected), (5, 0))
        self.assertEqual(summary(self.f, license_id), (5, 15))

    def test_dropped_connections_lose_and_double_nothing(self) -> None:
        license_id, key = self.f.new_license()
        proxy = CuttableProxy(URL)
        try:
            with UsageUploader(Client(proxy.url, timeout=5), tempfile.mkdtemp(), license_key=key, batch_size=20, max_in_flight=2, backoff_initial=0.05, backoff_max=0.2) as u:
                for i in range(600):
                    u.record("tokens", 1 + i % 5)
                acked = 0
                for threshold in (60, 240, 420):
                    deadline = time.monotonic() + 30
                    while u.accepted + u.duplicates < threshold and time.monotonic() < deadline:
                        time.sleep(0.005)
                    if u.pending:
                        proxy.cut()
                    acked = u.accepted + u.duplicates
                self.assertTrue(u.flush(60), u.last_error)
                self.assertGreater(proxy.cuts, 0)
                self.assertGreater(acked, 0)
        finally:
            proxy.close()
        self.assertEqual(summary(self.f, license_id), (600, sum(1 + i % 5 for i in range(600))))

    def test_killed_mid_upload_counts_every_event_once(self) -> None:
        license_id, key = self.f.new_license()
        spool = tempfile.mkdtemp()
        agent = [sys.executable, os.path.join(HERE, "usage_agent.py"), URL, key, spool]
        first_n, second_n = 1500, 200
        proc = subprocess.Popen(agent + [str(first_n)], stdout=subprocess.PIPE, text=True)
        lines = []
        try:
            for line in proc.stdout:
                lines.append(json.loads(line))
                # Killed once some batches are acknowledged and most are not.
                if lines[-1].get("acked", 0) >= 100:
                    proc.send_signal(signal.SIGKILL)
                    break
        finally:
            proc.wait(30)
            proc.stdout.close()
        self.assertEqual(proc.returncode, -signal.SIGKILL)
        self.assertFalse(any(x.get("drained") for x in lines), "the kill landed mid-upload")
        res = subprocess.run(agent + [str(second_n)], capture_output=True, text=True, timeout=120)
        self.assertEqual(res.returncode, 0, res.stderr)
        out = [json.loads(x) for x in res.stdout.splitlines()]
        self.assertGreater(out[0]["recovered"], 0, "the restart found un-acknowledged events in the spool")
        self.assertLess(out[0]["recovered"], first_n)
        self.assertTrue(out[-1]["drained"])
        expected_sum = sum(1 + i % 7 for i in range(first_n)) + sum(1 + i % 7 for i in range(second_n))
        self.assertEqual(summary(self.f, license_id), (first_n + second_n, expected_sum))


if __name__ == "__main__":
    unittest.main()
