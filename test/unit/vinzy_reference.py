"""An independent reference of Vinzy-Engine's published key algorithm (Python stdlib only).

Reads JSON lines {"body": "PRD-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE", "secret": "..."} on stdin and
prints, for each, the full key: body + "-" + first 10 chars of unpadded base32(HMAC-SHA256)
split into two segments of five.
"""
import base64
import hashlib
import hmac
import json
import sys

for line in sys.stdin:
    req = json.loads(line)
    digest = hmac.new(req["secret"].encode("utf-8"), req["body"].encode("utf-8"), hashlib.sha256).digest()
    sig = base64.b32encode(digest).decode("ascii").rstrip("=")[:10]
    print(f'{req["body"]}-{sig[:5]}-{sig[5:]}')
