"""An independent reference of Vinzy-Engine's published key algorithm (Python stdlib only).

Reads JSON lines on stdin and prints one line for each:

- {"body": "PRD-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE", "secret": "..."}: the full key, body + "-" +
  the first 10 chars of unpadded base32(HMAC-SHA256(secret, body)) split into two
  segments of five.
- {"verify": "<key>", "keyring": {"0": "...", "1": "..."}}: "true" or "false", Vinzy's
  keyring check (verify_hmac_multi): the secret of the version named by the first random
  character (its index in the base32 alphabet), then every other secret of the keyring.
"""
import base64
import hashlib
import hmac
import json
import sys

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def signature(secret: str, body: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), body.encode("utf-8"), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").rstrip("=")[:10]


def verify_one(key: str, secret: str) -> bool:
    parts = key.split("-")
    if len(parts) != 8:
        return False
    return hmac.compare_digest("".join(parts[6:]), signature(secret, "-".join(parts[:6])))


def verify_multi(key: str, keyring: dict[int, str]) -> bool:
    parts = key.split("-")
    version = ALPHABET.find(parts[1][0]) if len(parts) > 1 and parts[1] else 0
    version = max(version, 0)
    if version in keyring and verify_one(key, keyring[version]):
        return True
    return any(verify_one(key, secret) for v, secret in keyring.items() if v != version)


for line in sys.stdin:
    req = json.loads(line)
    if "verify" in req:
        ring = {int(v): s for v, s in req["keyring"].items()}
        print("true" if verify_multi(req["verify"], ring) else "false")
    else:
        sig = signature(req["secret"], req["body"])
        print(f'{req["body"]}-{sig[:5]}-{sig[5:]}')
