import type { Clock } from "../platform/clock.js";
import { type DataKeys, open } from "../platform/crypto.js";
import type { EntityManager } from "../platform/db.js";
import { failedPrecondition } from "../platform/errors.js";
import type { SigningKeyStore } from "../platform/signing-keys.js";
import type { Events } from "../events/events.js";
import type { CatalogService } from "./catalog.service.js";
import {
  ED25519_PREFIX,
  encodeLicenseFile,
  encryptLicenseFile,
  HMAC_PREFIX,
  hmacLicenseFile,
  type LicenseFilePayload,
} from "./license-file.js";
import { effectiveStatus, planClaims } from "./license-plan.js";
import type { License } from "./licensing.entity.js";

export interface LicenseFileOptions {
  fingerprint: string;
  encrypt: boolean;
  format: "ed25519" | "hmac";
  ttlSeconds: number | null;
}

/**
 * An offline license file for `license`: the effective plan, signed with the active Ed25519 key (or HMAC with the
 * shared secret), optionally machine-bound and encrypted; emits `license.file_issued` in the caller's transaction.
 */
export async function issueLicenseFile(
  em: EntityManager,
  deps: {
    license: License;
    clock: Clock;
    events: Events;
    catalog: CatalogService;
    dataKey: DataKeys;
    signingKeys: SigningKeyStore;
    licenseFileHmacSecret: string | undefined;
  },
  actor: string,
  opts: LicenseFileOptions,
): Promise<{ file: string; kid: string; expiresAt: Date | null }> {
  const { license, clock, events, catalog, dataKey, signingKeys } = deps;
  const { id, tenantId } = license;
  const now = clock.now();
  const status = effectiveStatus(license, now);
  if (status !== "active")
    throw failedPrecondition("LICENSE_NOT_ACTIVE", `license ${id} is ${status}: no file can be issued`);
  // A file would carry no expiry and run offline for good: the clock has to start first.
  if (license.expiryPending)
    throw failedPrecondition(
      "EXPIRY_NOT_STARTED",
      `license ${id}'s expiry has not started (its policy's expiration_basis): activate, validate or use it first`,
    );
  if (opts.format === "hmac" && !deps.licenseFileHmacSecret)
    throw failedPrecondition("HMAC_NOT_CONFIGURED", "format: LICENSD_LICENSE_FILE_HMAC_SECRET is not set", {
      field: "format",
    });
  const [product, policy, customer] = await Promise.all([
    catalog.getProduct(em, tenantId, license.productId),
    catalog.getPolicy(em, tenantId, license.policyId),
    catalog.getCustomer(em, tenantId, license.customerId),
  ]);
  let expiresAt = license.expiresAt ?? null;
  if (opts.ttlSeconds !== null) {
    const byTtl = new Date(now.getTime() + opts.ttlSeconds * 1000);
    if (!expiresAt || byTtl < expiresAt) expiresAt = byTtl;
  }
  const kid = opts.format === "hmac" ? "hmac" : signingKeys.activeKid();
  const payload: LicenseFilePayload = {
    v: 1,
    license_id: license.id,
    tenant_id: tenantId,
    product: { code: product.code, name: product.name },
    customer: { name: customer.name, email: customer.email, organization: customer.organization },
    plan: policy.name,
    ...planClaims(product, policy, license),
    issued_at: now.toISOString(),
    expires_at: expiresAt ? expiresAt.toISOString() : null,
    kid,
    ...(opts.fingerprint ? { fingerprint: opts.fingerprint } : {}),
  };
  let file =
    opts.format === "hmac"
      ? encodeLicenseFile(HMAC_PREFIX, payload, hmacLicenseFile(deps.licenseFileHmacSecret!))
      : encodeLicenseFile(ED25519_PREFIX, payload, (input) => signingKeys.sign(input).signature);
  if (opts.encrypt) file = encryptLicenseFile(file, open(dataKey, Buffer.from(license.keySealed), id).toString());
  await events.emit(em, {
    tenantId,
    type: "license.file_issued",
    subject: id,
    actor,
    payload: {
      format: opts.format,
      encrypted: opts.encrypt,
      fingerprint: opts.fingerprint || null,
      expires_at: payload.expires_at,
      kid,
    },
  });
  return { file, kid, expiresAt };
}
