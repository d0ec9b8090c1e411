"""verify_webhook: docs/test-vectors.json's `webhooks` cases (the ones every client checks),
then deliveries from a small signer: rotation, tampering, tolerance, header forms."""
from __future__ import annotations

import base64
import email.message
import hashlib
import hmac
import json
import os
import time
import unittest
from datetime import datetime, timezone

from support import VECTORS

from licensd_client import WebhookMessage, WebhookVerificationError, verify_webhook

BODY = json.dumps({"type": "license.created", "timestamp": "2027-01-01T00:00:00Z", "data": {"id": "lic_1 \u2713"}})


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def signed(secrets, body: str, at: int, msg_id: str = "evt_test") -> dict:
    """What licensd's dispatcher sends (docs/formats.md, Webhook signatures)."""
    sigs = []
    for s in secrets:
        mac = hmac.new(base64.b64decode(s[6:]), f"{msg_id}.{at}.{body}".encode(), hashlib.sha256).digest()
        sigs.append("v1," + base64.b64encode(mac).decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(at), "webhook-signature": " ".join(sigs)}


class Vectors(unittest.TestCase):
    def test_webhook_vectors(self) -> None:
        with open(VECTORS, encoding="utf-8") as f:
            cases = json.load(f)["webhooks"]["cases"]
        self.assertGreater(len(cases), 10)
        for c in cases:
            with self.subTest(c["name"]):
                try:
                    m = verify_webhook(c["payload"].encode("utf-8"), c["headers"], c["secret"], now=c["now"])
                    got = "OK"
                    self.assertEqual(m.id, c["headers"]["webhook-id"])
                    self.assertEqual(m.event, json.loads(c["payload"]))
                    self.assertEqual(int(m.timestamp.timestamp()), int(c["headers"]["webhook-timestamp"]))
                except WebhookVerificationError as e:
                    got = e.reason
                self.assertEqual(got, c["expect"])


class Deliveries(unittest.TestCase):
    def reason(self, *args, **kwargs) -> str:
        with self.assertRaises(WebhookVerificationError) as caught:
            verify_webhook(*args, **kwargs)
        return caught.exception.reason

    def test_valid_and_rotation(self) -> None:
        old, current = new_secret(), new_secret()
        now = int(time.time())
        headers = signed([old, current], BODY, now)
        for s in (old, current):
            m = verify_webhook(BODY, headers, s)
            self.assertIsInstance(m, WebhookMessage)
            self.assertEqual(m.event["type"], "license.created")
            self.assertEqual(m.timestamp, datetime.fromtimestamp(now, timezone.utc))
        self.assertEqual(self.reason(BODY, headers, new_secret()), "BAD_SIGNATURE")

    def test_tampering(self) -> None:
        secret = new_secret()
        now = 1_798_761_600
        h = signed([secret], BODY, now)
        self.assertEqual(self.reason(BODY.replace("created", "deleted"), h, secret, now=now), "BAD_SIGNATURE")
        self.assertEqual(self.reason(BODY, {**h, "webhook-id": "evt_x"}, secret, now=now), "BAD_SIGNATURE")
        self.assertEqual(self.reason(BODY, {**h, "webhook-timestamp": str(now - 1)}, secret, now=now), "BAD_SIGNATURE")
        self.assertEqual(self.reason(BODY, {**h, "webhook-signature": "v1,AAAA"}, secret, now=now), "BAD_SIGNATURE")

    def test_tolerance(self) -> None:
        secret = new_secret()
        at = 1_798_761_600
        h = signed([secret], BODY, at)
        for offset in (-300, 0, 300):
            verify_webhook(BODY, h, secret, now=at + offset)
        verify_webhook(BODY, h, secret, now=datetime.fromtimestamp(at + 299, timezone.utc))
        for offset in (-301, 301, 86_400):
            self.assertEqual(self.reason(BODY, h, secret, now=at + offset), "TIMESTAMP_OUT_OF_TOLERANCE")
        self.assertEqual(self.reason(BODY, h, secret, now=at + 120, tolerance=60), "TIMESTAMP_OUT_OF_TOLERANCE")
        # Default: the clock, long past 2001.
        self.assertEqual(self.reason(BODY, signed([secret], BODY, 1_000_000_000), secret), "TIMESTAMP_OUT_OF_TOLERANCE")

    def test_bad_input(self) -> None:
        secret = new_secret()
        now = int(time.time())
        h = signed([secret], BODY, now)
        self.assertEqual(self.reason(BODY, {}, secret), "MISSING_HEADERS")
        self.assertEqual(self.reason(BODY, {**h, "webhook-id": ""}, secret), "MISSING_HEADERS")
        self.assertEqual(self.reason(BODY, h, secret[6:]), "BAD_SECRET")
        self.assertEqual(self.reason(BODY, h, "whsec_"), "BAD_SECRET")
        self.assertEqual(self.reason(BODY, h, "whsec_not base64!"), "BAD_SECRET")
        self.assertEqual(self.reason(BODY, {**h, "webhook-timestamp": "soon"}, secret), "MALFORMED")
        self.assertEqual(self.reason(BODY, {**h, "webhook-signature": "junk v1,@@@ v1"}, secret), "BAD_SIGNATURE")
        self.assertEqual(self.reason("not json", signed([secret], "not json", now), secret), "MALFORMED")

    def test_header_forms(self) -> None:
        secret = new_secret()
        h = signed([secret], BODY, int(time.time()))
        # Any case of names; email.message.Message (http.server's headers) with a repeated header.
        verify_webhook(BODY, {k.title(): v for k, v in h.items()}, secret)
        msg = email.message.Message()
        msg["Webhook-Id"] = h["webhook-id"]
        msg["Webhook-Timestamp"] = h["webhook-timestamp"]
        msg["Webhook-Signature"] = "v1," + base64.b64encode(bytes(32)).decode()
        msg["Webhook-Signature"] = h["webhook-signature"]
        self.assertEqual(verify_webhook(BODY.encode(), msg, secret).id, "evt_test")


if __name__ == "__main__":
    unittest.main()
