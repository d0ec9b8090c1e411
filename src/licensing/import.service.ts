import { Code } from "@connectrpc/connect";
import type { Database } from "../platform/db.js";
import { DomainError } from "../platform/errors.js";
import type { Logger } from "../platform/logger.js";
import type { CatalogService } from "./catalog.service.js";
import { Customer, Policy } from "./licensing.entity.js";
import type { LicenseService } from "./license.service.js";

export interface ImportRow {
  productId: string;
  policyId: string;
  tier: string;
  licenseKey: string;
  customerName: string;
  customerEmail: string;
  customerOrganization: string;
  issuedAt: Date | undefined;
  expiresAt: Date | null;
  status: "active" | "suspended" | "revoked";
  metadata: Record<string, string>;
}

export interface ImportSummary {
  received: number;
  imported: number;
  customersCreated: number;
  failed: number;
  errors: { index: number; reason: string; field: string; message: string }[];
}

const MAX_REPORTED_ERRORS = 1000;
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/**
 * Bulk import of existing licenses (DataTools issuance logs, Vinzy licenses with their
 * keys). Each row is its own transaction: a bad row is reported and the rest go on.
 */
export function createImportService(deps: {
  db: Database;
  catalog: CatalogService;
  licenses: LicenseService;
  logger: Logger;
}) {
  const { db, catalog, licenses, logger } = deps;

  async function importRow(
    tenantId: string,
    actor: string,
    row: ImportRow,
    clientAddress: string,
  ): Promise<{ customerCreated: boolean }> {
    const rowError = (reason: string, field: string, message: string) =>
      new DomainError(Code.InvalidArgument, reason, `${field}: ${message}`, { field });
    if (!row.licenseKey) throw rowError("MISSING_FIELD", "license_key", "license_key is required");
    if (!EMAIL.test(row.customerEmail))
      throw rowError("INVALID_EMAIL", "customer_email", `${JSON.stringify(row.customerEmail)} is not an email address`);
    if (!row.productId) throw rowError("MISSING_FIELD", "product_id", "product_id is required");
    return db.tx(async (em) => {
      const product = await catalog.getProduct(em, tenantId, row.productId);
      let policyId = row.policyId;
      if (!policyId) {
        const policy = await em.findOne(Policy, { tenantId, productId: product.id, name: row.tier });
        if (!policy)
          throw rowError(
            "UNKNOWN_POLICY",
            "tier",
            `product ${product.code} has no policy named ${JSON.stringify(row.tier)}`,
          );
        policyId = policy.id;
      }
      let customer = await em.findOne(Customer, {
        tenantId,
        email: { $ilike: row.customerEmail.replace(/[\\%_]/g, (c) => `\\${c}`) },
      });
      const customerCreated = !customer;
      customer ??= await catalog.createCustomer(em, tenantId, actor, {
        name: row.customerName || row.customerEmail,
        email: row.customerEmail,
        organization: row.customerOrganization,
        metadata: {},
      });
      const { license } = await licenses.create(em, tenantId, actor, {
        policyId,
        customerId: customer.id,
        expiresAt: row.expiresAt,
        entitlementOverrides: [],
        agentOverrides: [],
        maxMachines: null,
        metadata: {
          ...row.metadata,
          imported: "true",
          ...(row.issuedAt ? { issued_at: row.issuedAt.toISOString() } : {}),
        },
        customKey: row.licenseKey,
        clientAddress,
      });
      if (row.status === "suspended") await licenses.suspend(em, tenantId, actor, license.id);
      if (row.status === "revoked") await licenses.revoke(em, tenantId, actor, license.id);
      return { customerCreated };
    });
  }

  return {
    /**
     * Imports rows as they arrive; `clientAddress` pays for keys another tenant holds (as CreateLicense's custom keys
     * do).
     */
    async importRows(
      tenantId: string,
      actor: string,
      rows: AsyncIterable<ImportRow>,
      opts: { clientAddress?: string; onProgress?: (s: ImportSummary) => void } = {},
    ): Promise<ImportSummary> {
      const summary: ImportSummary = { received: 0, imported: 0, customersCreated: 0, failed: 0, errors: [] };
      for await (const row of rows) {
        const index = summary.received++;
        try {
          const { customerCreated } = await importRow(tenantId, actor, row, opts.clientAddress ?? "");
          summary.imported++;
          if (customerCreated) summary.customersCreated++;
        } catch (err) {
          summary.failed++;
          let reported = {
            reason: "INTERNAL",
            field: "",
            message: "the row could not be imported (see the server log)",
          };
          if (err instanceof DomainError) {
            const field = err.metadata.field === "custom_key" ? "license_key" : (err.metadata.field ?? "");
            reported = { reason: err.reason, field, message: err.message.replace(/^custom_key:/, "license_key:") };
          } else {
            logger.error({ err, index }, "import row failed");
          }
          if (summary.errors.length < MAX_REPORTED_ERRORS) summary.errors.push({ index, ...reported });
        }
        opts.onProgress?.(summary);
      }
      return summary;
    },
  };
}

export type ImportService = ReturnType<typeof createImportService>;
