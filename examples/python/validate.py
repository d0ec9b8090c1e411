"""Validate a license key, check the signed answer offline, and gate a feature on it.

    pip install ./clients/python          (see clients/python/README.md)
    LICENSD_URL=http://127.0.0.1:8080 LICENSD_LICENSE_KEY=PRD-… python examples/python/validate.py

Prints what it decided, one line each, and exits 0 when the license is good.
"""
import os
import secrets
import sys

from licensd.licensing.v1 import licensing_service_pb2 as lic
from licensd_client import (
    Client,
    LicensdError,
    LicenseInfo,
    LicenseRequired,
    SigningKeys,
    require_feature,
    verify_validation_response,
)

url = os.environ.get("LICENSD_URL", "http://127.0.0.1:8080")
key = os.environ["LICENSD_LICENSE_KEY"]

with Client(url, timeout=10) as client:
    keys = SigningKeys(client)  # the published Ed25519 keys, cached; refetched once on an unknown kid

    # A fresh nonce comes back inside the signed answer: a recorded answer cannot be replayed.
    nonce = secrets.token_hex(16)
    answer = client.licensing.ValidateLicense(key=key, nonce=nonce)
    if not verify_validation_response(answer, keys.get(), nonce=nonce):
        sys.exit("the answer is not signed by this licensd, or not for this request")
    print(f"signed answer verified (kid {answer.kid})")
    print(f"valid={answer.valid} code={lic.ValidationCode.Name(answer.code)} features={','.join(answer.features)}")

    # The license state the rest of the program reads; building it never raises.
    info = LicenseInfo(valid=answer.valid, code="VALID" if answer.valid else "INVALID", features=tuple(answer.features))


@require_feature("reports", lambda: info)
def export_report() -> str:
    return "report exported"


@require_feature("sso", lambda: info)
def enable_sso() -> str:
    return "sso enabled"


for action in (export_report, enable_sso):
    try:
        print(action())
    except LicenseRequired as refused:
        print(f"{action.__name__}: HTTP {refused.status} {refused.body}")

# Bad input is refused with a reason and the field named.
with Client(url, timeout=10) as client:
    try:
        client.licensing.ValidateLicense(key="")
    except LicensdError as err:
        print(f"refused: {err.code.name} reason={err.reason} field={err.field}")

sys.exit(0 if info.valid else 1)
