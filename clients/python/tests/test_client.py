"""Client: constructor checks, typed errors from a live licensd, and which calls are retried."""
from __future__ import annotations

import socket
import unittest
import uuid

import grpc
from support import SUPER_ADMIN_KEY, URL, fixture, live

from licensd_client import Client, LicensdError, parse_target


class Constructor(unittest.TestCase):
    def test_targets(self) -> None:
        self.assertEqual(parse_target("https://licensd.example.com"), ("licensd.example.com:443", True))
        self.assertEqual(parse_target("http://127.0.0.1:8080"), ("127.0.0.1:8080", False))
        self.assertEqual(parse_target("licensd.example.com:9443"), ("licensd.example.com:9443", True))
        self.assertEqual(parse_target("localhost:8080"), ("localhost:8080", False))
        self.assertEqual(parse_target("10.0.0.5:8080", tls=False), ("10.0.0.5:8080", False))
        self.assertEqual(parse_target("http://[::1]:8080"), ("[::1]:8080", False))

    def test_bad_options_are_refused_clearly(self) -> None:
        for url in ("", "ftp://x", "https://x/api", "no-port", "host:99999"):
            with self.subTest(url=url), self.assertRaisesRegex(ValueError, "^url: "):
                Client(url)
        with self.assertRaisesRegex(ValueError, "^api_key: "):
            Client("localhost:1", api_key="a\nb")
        with self.assertRaisesRegex(ValueError, "^timeout: "):
            Client("localhost:1", timeout=0)
        with self.assertRaisesRegex(ValueError, "^retries: "):
            Client("localhost:1", retries=-1)

    def test_methods_follow_the_protos(self) -> None:
        with Client("localhost:1") as c:
            self.assertTrue(c.licensing.GetLicense.idempotent)
            self.assertTrue(c.licensing.ValidateLicense.idempotent)
            self.assertFalse(c.licensing.CreateLicense.idempotent)
            self.assertIn("StreamUsage", dir(c.usage))
            with self.assertRaisesRegex(AttributeError, "LicensingService has no RPC 'Nope'"):
                c.licensing.Nope
            with self.assertRaisesRegex(TypeError, "GetLicense takes a GetLicenseRequest"):
                c.licensing.GetLicense(object())

    def test_retries_only_what_is_safe_to_repeat(self) -> None:
        """Against a loopback port nothing listens on: UNAVAILABLE each time."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with Client(f"http://127.0.0.1:{port}", retries=3, timeout=2) as c:
            delays = []
            c._sleep = delays.append
            with self.assertRaises(LicensdError) as caught:
                c.tenants.GetTenant()  # NO_SIDE_EFFECTS
            self.assertEqual(caught.exception.code, grpc.StatusCode.UNAVAILABLE)
            self.assertEqual(len(delays), 3)
            self.assertTrue(all(0 <= d <= 5.0 for d in delays))
            delays.clear()
            with self.assertRaises(LicensdError):
                c.tenants.CreateTenant(name="x")  # a mutation without a key: sent once
            self.assertEqual(delays, [])
            with self.assertRaises(LicensdError):
                c.tenants.CreateTenant(name="x", idempotency_key="k-1")  # the server would answer a repeat with the first result
            self.assertEqual(len(delays), 3)


@live
class Errors(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.f = fixture()

    def test_bad_input_names_reason_and_field(self) -> None:
        with self.f.admin() as c, self.assertRaises(LicensdError) as caught:
            c.licensing.CreateCustomer(name="", email="not-an-email")
        err = caught.exception
        self.assertEqual(err.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(err.reason, "INVALID_ARGUMENT")
        self.assertEqual(err.domain, "licensd.dev")
        fields = {v.field for v in err.field_violations}
        self.assertIn(err.field, fields)
        self.assertTrue({"name", "email"} & fields, fields)
        self.assertTrue(all(v.description for v in err.field_violations))

    def test_wrong_key_is_unauthenticated_with_a_reason(self) -> None:
        with Client(URL, api_key="lsk_" + "x" * 40) as c, self.assertRaises(LicensdError) as caught:
            c.tenants.GetTenant()
        self.assertEqual(caught.exception.code, grpc.StatusCode.UNAUTHENTICATED)
        self.assertTrue(caught.exception.reason, "ErrorInfo reason present")
        with Client(URL) as c, self.assertRaises(LicensdError) as caught:
            c.tenants.GetTenant()
        self.assertEqual((caught.exception.code, caught.exception.reason), (grpc.StatusCode.UNAUTHENTICATED, "MISSING_API_KEY"))

    def test_another_tenants_license_is_not_found(self) -> None:
        with Client(URL, api_key=SUPER_ADMIN_KEY) as c:
            other = c.tenants.CreateTenant(name="py-other").tenant
            secret = c.tenants.CreateApiKey(tenant_id=other.id, name="o", scopes=[1]).secret
        with Client(URL, api_key=secret) as c, self.assertRaises(LicensdError) as caught:
            c.licensing.GetLicense(id=self.f.license_id)
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertTrue(caught.exception.reason.endswith("NOT_FOUND"), caught.exception.reason)

    def test_a_mutation_retried_with_its_key_happens_once(self) -> None:
        key = f"py-{uuid.uuid4().hex}"
        with self.f.admin() as c:
            first = c.licensing.CreateCustomer(name="Once", email="once@example.com", idempotency_key=key).customer
            again = c.licensing.CreateCustomer(name="Once", email="once@example.com", idempotency_key=key).customer
            self.assertEqual(first.id, again.id)
            with self.assertRaises(LicensdError) as caught:
                c.licensing.CreateCustomer(name="Other", email="other@example.com", idempotency_key=key)
            self.assertEqual(caught.exception.reason, "IDEMPOTENCY_KEY_REUSED")

    def test_fields_or_messages_and_server_streams(self) -> None:
        from licensd.licensing.v1 import licensing_service_pb2 as lic

        with self.f.admin() as c:
            by_fields = c.licensing.GetLicense(id=self.f.license_id).license
            by_message = c.licensing.GetLicense(lic.GetLicenseRequest(id=self.f.license_id), timeout=5).license
            self.assertEqual(by_fields, by_message)
            self.assertEqual(by_fields.id, self.f.license_id)
            tail = c.audit.TailAuditEvents(after_seq=0, timeout=10)
            first = next(e for e in tail if e.HasField("event"))
            tail.cancel()
            self.assertEqual((first.event.seq, first.event.type), (1, "tenant.created"))


if __name__ == "__main__":
    unittest.main()
