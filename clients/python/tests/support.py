"""What the package's tests share: where the live licensd is, and one licensed product on it.

The live tests need a running licensd (test/e2e/python-client.test.ts starts one):
    LICENSD_TEST_URL              its address, e.g. http://127.0.0.1:8080
    LICENSD_TEST_SUPER_ADMIN_KEY  its super-admin key
Without them they are skipped; the offline tests (vectors, gates, spool) always run.
"""
from __future__ import annotations

import os
import unittest
import uuid
from dataclasses import dataclass
from typing import Dict, Optional

from licensd.activation.v1 import activation_service_pb2 as act
from licensd.licensing.v1 import policy_pb2, product_pb2
from licensd.tenant.v1 import api_key_pb2
from licensd.usage.v1 import usage_pb2

from licensd_client import Client

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.environ.get("LICENSD_TEST_VECTORS") or os.path.join(HERE, "..", "..", "..", "docs", "test-vectors.json")
URL = os.environ.get("LICENSD_TEST_URL", "")
SUPER_ADMIN_KEY = os.environ.get("LICENSD_TEST_SUPER_ADMIN_KEY", "")

live = unittest.skipUnless(URL and SUPER_ADMIN_KEY, "no live licensd (LICENSD_TEST_URL, LICENSD_TEST_SUPER_ADMIN_KEY)")


@dataclass
class Fixture:
    """A tenant with an admin API key, a product (features reports, export; meter tokens), a policy, a customer and a license."""

    tenant_id: str
    api_key: str
    product_id: str
    product_code: str
    policy_id: str
    customer_id: str
    license_id: str
    license_key: str
    keys: Dict[str, bytes]

    def current_keys(self) -> Dict[str, bytes]:
        """The keys published now (a test may have rotated them since the fixture was made)."""
        with Client(URL) as c:
            return {k.kid: bytes(k.public_key) for k in c.activation.GetSigningKeys().keys}

    def admin(self, **options) -> Client:
        return Client(URL, api_key=self.api_key, **options)

    def new_license(self) -> tuple:
        """(license id, key): another license on the same policy (for tests that change its state)."""
        with self.admin() as c:
            res = c.licensing.CreateLicense(tenant_id=self.tenant_id, policy_id=self.policy_id, customer_id=self.customer_id)
            return res.license.id, res.key


_fixture: Optional[Fixture] = None


def fixture() -> Fixture:
    """Created once per test process, through the package's own Client (as the super-admin)."""
    global _fixture
    if _fixture is not None:
        return _fixture
    tag = uuid.uuid4().hex[:6].upper()
    with Client(URL, api_key=SUPER_ADMIN_KEY) as c:
        tenant = c.tenants.CreateTenant(name=f"py-client-{tag}").tenant
        key = c.tenants.CreateApiKey(
            tenant_id=tenant.id, name="py", scopes=[api_key_pb2.API_KEY_SCOPE_ADMIN, api_key_pb2.API_KEY_SCOPE_INGEST]
        ).secret
    with Client(URL, api_key=key) as c:
        code = "P" + tag[:2]
        product = c.licensing.CreateProduct(
            code=code,
            name="Python client test",
            features=[
                product_pb2.FeatureDefinition(name="reports", kind=product_pb2.FEATURE_KIND_FLAG, compose=product_pb2.COMPOSE_STRATEGY_UNION),
                product_pb2.FeatureDefinition(name="export", kind=product_pb2.FEATURE_KIND_FLAG, compose=product_pb2.COMPOSE_STRATEGY_UNION),
            ],
        ).product
        policy = c.licensing.CreatePolicy(
            product_id=product.id,
            name="pro",
            floating=True,
            max_machines=20,
            entitlements=[policy_pb2.Entitlement(feature="reports", enabled=True)],
        ).policy
        customer = c.licensing.CreateCustomer(name="Py Customer", email=f"py-{tag.lower()}@example.com").customer
        created = c.licensing.CreateLicense(policy_id=policy.id, customer_id=customer.id)
        c.usage.CreateMeter(product_id=product.id, metric="tokens", aggregation=usage_pb2.AGGREGATION_SUM)
        keys = {k.kid: bytes(k.public_key) for k in c.activation.GetSigningKeys(act.GetSigningKeysRequest()).keys}
    _fixture = Fixture(tenant.id, key, product.id, code, policy.id, customer.id, created.license.id, created.key, keys)
    return _fixture


__all__ = ["Fixture", "fixture", "live", "URL", "SUPER_ADMIN_KEY", "VECTORS", "HERE"]
