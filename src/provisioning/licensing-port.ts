import { sql, type EntityManager } from "../platform/db.js";
import type { CatalogService } from "../licensing/catalog.service.js";
import type { LicenseService } from "../licensing/license.service.js";
import type { PolicyLookup } from "./payment-source.service.js";
import type { ProvisioningLicenses } from "./provisioning.service.js";

/** Provisioning's ports filled with the licensing services: the same checks and audit events as the API's. */
export function createProvisioningLicenses(deps: {
  catalog: CatalogService;
  licenses: LicenseService;
}): ProvisioningLicenses & PolicyLookup {
  const { catalog, licenses } = deps;
  return {
    async policyExists(em: EntityManager, tenantId: string, policyId: string) {
      const rows = await sql(em, `select 1 from policies where tenant_id = $1 and id = $2`, [tenantId, policyId]);
      return rows.length > 0;
    },
    async findCustomerByEmail(em, tenantId, email) {
      // customers_email_idx is unique on (tenant_id, lower(email)).
      const [row] = await sql<{ id: string }>(
        em,
        `select id from customers where tenant_id = $1 and lower(email) = lower($2)`,
        [tenantId, email],
      );
      return row?.id;
    },
    async createCustomer(em, tenantId, actor, input) {
      return (await catalog.createCustomer(em, tenantId, actor, { ...input, organization: "" })).id;
    },
    async createLicense(em, tenantId, actor, input) {
      const { license, key } = await licenses.create(em, tenantId, actor, {
        policyId: input.policyId,
        customerId: input.customerId,
        expiresAt: input.expiresAt,
        entitlementOverrides: [],
        agentOverrides: [],
        maxMachines: null,
        metadata: input.metadata,
        customKey: "",
      });
      return { id: license.id, key };
    },
    async renew(em, tenantId, actor, licenseId, until) {
      await licenses.renew(em, tenantId, actor, licenseId, until);
    },
    async setExpiry(em, tenantId, actor, licenseId, expiresAt) {
      await licenses.update(em, tenantId, actor, licenseId, { expiresAt });
    },
    async suspend(em, tenantId, actor, licenseId) {
      await licenses.suspend(em, tenantId, actor, licenseId);
    },
    async reinstate(em, tenantId, actor, licenseId) {
      await licenses.reinstate(em, tenantId, actor, licenseId);
    },
    async revoke(em, tenantId, actor, licenseId) {
      await licenses.revoke(em, tenantId, actor, licenseId);
    },
    async status(em, tenantId, licenseId) {
      const [row] = await sql<{ status: string }>(em, `select status from licenses where tenant_id = $1 and id = $2`, [
        tenantId,
        licenseId,
      ]);
      return row?.status;
    },
    async issueFile(em, tenantId, actor, licenseId) {
      const issued = await licenses.issueFile(em, tenantId, actor, licenseId, {
        fingerprint: "",
        encrypt: false,
        format: "ed25519",
        ttlSeconds: null,
      });
      return issued.file;
    },
    async describe(em, tenantId, licenseId) {
      const license = await licenses.get(em, tenantId, licenseId);
      const policy = await catalog.getPolicy(em, tenantId, license.policyId);
      const product = await catalog.getProduct(em, tenantId, license.productId);
      return { productName: product.name, policyName: policy.name, expiresAt: license.expiresAt ?? null };
    },
  };
}
