"""A webhook receiver written from docs/webhooks.md ("Verifying a delivery"), on the standard
library's http.server instead of Flask. Usage:

    WEBHOOK_SECRETS='{"/ok": "whsec_...", "/wrong": "whsec_..."}' python3 python_webhook_receiver.py PORT

Listens on 127.0.0.1:PORT; each path has the secret the map gives it (an unknown path: 404).
Prints {"listening": PORT} once bound, then one JSON line per delivery:
{"path", "ok", "id", "type", "reason", "signatures"} (a refusal's id is the unverified
webhook-id header)."""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from licensd_client import WebhookVerificationError, verify_webhook

SECRETS = json.loads(os.environ["WEBHOOK_SECRETS"])


def report(**fields):
    print(json.dumps(fields), flush=True)


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))  # the raw body
        secret = SECRETS.get(self.path)
        if secret is None:
            self.send_response(404)
            self.end_headers()
            return
        signatures = len((self.headers.get("webhook-signature") or "").split())
        try:
            message = verify_webhook(body, self.headers, secret)
        except WebhookVerificationError as e:
            # A refused delivery's id is the unverified webhook-id header.
            refused_id = self.headers.get("webhook-id")
            report(path=self.path, ok=False, id=refused_id, type=None, reason=e.reason, signatures=signatures)
            self.send_response(400)
            self.end_headers()
            self.wfile.write(e.reason.encode())
            return
        report(path=self.path, ok=True, id=message.id, type=message.event["type"], reason=None, signatures=signatures)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format, *args):
        pass  # stdout carries only the JSON lines


server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver)
report(listening=server.server_address[1])
server.serve_forever()
