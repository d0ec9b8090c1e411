"""Gates: LicenseInfo never raises; decorators raise LicenseRequired; WSGI (over a real
local socket) and ASGI (driven in-process) answer 402 / 403 with HenKaiPan's JSON."""
from __future__ import annotations

import asyncio
import json
import threading
import unittest
import urllib.error
import urllib.request
from datetime import datetime, timezone
from wsgiref.simple_server import WSGIRequestHandler, make_server

from support import fixture, live

from licensd_client import (
    ASGILicenseGate,
    LicenseInfo,
    LicenseRequired,
    WSGILicenseGate,
    license_info,
    read_license,
    require_feature,
    require_license,
)
from licensd_client.license_file import LicenseFileResult

VALID = LicenseInfo(True, "VALID", features=("reports",), tier="pro", expiry=datetime(2030, 1, 1, tzinfo=timezone.utc))
EXPIRED = LicenseInfo(False, "EXPIRED", tier="pro")


def hello_wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


async def hello_asgi(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(app):
    """A WSGI app on a free loopback port, in a thread; returns (base URL, server)."""
    server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as res:
            return res.status, res.headers.get("Content-Type"), res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type"), err.read()


def asgi_get(app, path: str):
    """Drives an ASGI app for one GET; returns (status, headers, body)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


class LicenseInfoShape(unittest.TestCase):
    def test_never_raises(self) -> None:
        self.assertEqual(license_info(None, {}).code, "NO_LICENSE")
        self.assertEqual(license_info("garbage", {}).code, "MALFORMED")
        self.assertEqual(license_info("licensd1.e30.AAAA", {"k": b"x"}).code, "MALFORMED")
        self.assertEqual(read_license(lambda: 1 / 0).code, "NO_LICENSE")
        self.assertFalse(read_license(lambda: 1 / 0).valid)
        self.assertEqual(read_license(object()).valid, False)
        broken = LicenseFileResult(True, "VALID", payload={"features": "not-a-list", "expires_at": 12})
        self.assertIsInstance(LicenseInfo.from_result(broken), LicenseInfo)

    def test_grace_and_untrusted_claims(self) -> None:
        grace = LicenseInfo.from_result(LicenseFileResult(True, "VALID", {"status": "expired", "plan": "pro", "features": ["reports"], "expires_at": "2030-01-01T00:00:00.000Z"}))
        self.assertEqual((grace.valid, grace.grace, grace.tier, grace.expiry.year), (True, True, "pro", 2030))
        forged = LicenseInfo.from_result(LicenseFileResult(False, "BAD_SIGNATURE", {"plan": "enterprise", "features": ["everything"]}))
        self.assertEqual((forged.valid, forged.tier, forged.features), (False, None, ()))
        self.assertEqual(VALID.to_dict()["expiry"], "2030-01-01T00:00:00Z")


class Decorators(unittest.TestCase):
    def test_sync_and_async(self) -> None:
        @require_feature("reports", lambda: VALID)
        def report():
            return "report"

        @require_feature("export", lambda: VALID)
        def export():
            return "export"

        @require_license(EXPIRED)
        async def anything():
            return "x"

        self.assertEqual(report(), "report")
        with self.assertRaises(LicenseRequired) as caught:
            export()
        self.assertEqual((caught.exception.status, caught.exception.body), (403, {"error": "license_required", "feature": "export", "code": "FEATURE_NOT_LICENSED"}))
        with self.assertRaises(LicenseRequired) as caught:
            asyncio.run(anything())
        self.assertEqual((caught.exception.status, caught.exception.body["feature"], caught.exception.code), (402, None, "EXPIRED"))

    def test_the_license_is_read_at_every_call(self) -> None:
        state = {"info": VALID}

        @require_license(lambda: state["info"])
        def run():
            return "ran"

        self.assertEqual(run(), "ran")
        state["info"] = EXPIRED
        with self.assertRaises(LicenseRequired):
            run()


class Middleware(unittest.TestCase):
    def test_wsgi_over_a_socket(self) -> None:
        state = {"info": VALID}
        source = lambda: state["info"]  # noqa: E731
        app = WSGILicenseGate(WSGILicenseGate(hello_wsgi, source, feature="export", paths=["/export"]), source, paths=["/api", "/export"])
        url, server = serve(app)
        try:
            self.assertEqual(get(url + "/api/x"), (200, "text/plain", b"hello"))
            self.assertEqual(get(url + "/public"), (200, "text/plain", b"hello"))
            status, ctype, body = get(url + "/export/csv")
            self.assertEqual((status, ctype, json.loads(body)), (403, "application/json", {"error": "license_required", "feature": "export", "code": "FEATURE_NOT_LICENSED"}))
            state["info"] = EXPIRED
            status, _, body = get(url + "/api/x")
            self.assertEqual((status, json.loads(body)), (402, {"error": "license_required", "feature": None, "code": "EXPIRED"}))
            self.assertEqual(get(url + "/public")[0], 200)
            self.assertEqual(get(url + "/apix")[0], 200)  # a prefix guards a path segment, not a string prefix
        finally:
            server.shutdown()
            server.server_close()

    def test_asgi(self) -> None:
        state = {"info": VALID}
        app = ASGILicenseGate(hello_asgi, lambda: state["info"], feature="reports")
        self.assertEqual(asgi_get(app, "/r")[0], 200)
        status, headers, body = asgi_get(ASGILicenseGate(hello_asgi, lambda: state["info"], feature="export"), "/r")
        self.assertEqual((status, headers[b"content-type"], json.loads(body)["feature"]), (403, b"application/json", "export"))
        state["info"] = EXPIRED
        status, _, body = asgi_get(app, "/r")
        self.assertEqual((status, json.loads(body)), (402, {"error": "license_required", "feature": "reports", "code": "EXPIRED"}))
        lifespan = []

        async def inner(scope, receive, send):
            lifespan.append(scope["type"])

        asyncio.run(ASGILicenseGate(inner, EXPIRED)({"type": "lifespan"}, None, None))
        self.assertEqual(lifespan, ["lifespan"])  # only requests are gated


@live
class LiveGates(unittest.TestCase):
    def test_a_live_license_file_gates_features(self) -> None:
        f = fixture()
        with f.admin() as c:
            issued = c.licensing.IssueLicenseFile(license_id=f.license_id)
        keys = f.current_keys()
        source = lambda: license_info(issued.license_file, keys)  # noqa: E731
        url, server = serve(WSGILicenseGate(hello_wsgi, source, feature="reports"))
        try:
            self.assertEqual(get(url + "/")[0], 200)
        finally:
            server.shutdown()
            server.server_close()
        self.assertEqual(asgi_get(ASGILicenseGate(hello_asgi, source, feature="export"), "/")[0], 403)
        tampered = lambda: license_info(issued.license_file[:-6] + "AAAAAA", keys)  # noqa: E731
        self.assertEqual(asgi_get(ASGILicenseGate(hello_asgi, tampered), "/")[0], 402)


if __name__ == "__main__":
    unittest.main()
