"""Runs the Python license-file verifier over JSON-lines cases on stdin; prints one code per line.

Each case: {"file": "...", "keys": {"kid": "<hex public key>"}, "hmac_secret": ..., "allow_hmac": ...,
            "license_key": ..., "fingerprint": ...}
"""
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "clients", "python", "src"))
sys.path.insert(0, os.path.join(ROOT, "gen", "python"))  # licensd_client imports its generated stubs
from licensd_client import verify_license_file  # noqa: E402

for line in sys.stdin:
    case = json.loads(line)
    keys = {kid: bytes.fromhex(pk) for kid, pk in (case.get("keys") or {}).items()}
    result = verify_license_file(
        case["file"],
        keys=keys,
        hmac_secret=case.get("hmac_secret"),
        allow_hmac=case.get("allow_hmac", False),
        license_key=case.get("license_key"),
        fingerprint=case.get("fingerprint"),
    )
    print(json.dumps({"code": result.code, "reports": result.has_feature("reports")}))
