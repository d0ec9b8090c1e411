import { sql, type EntityManager } from "../platform/db.js";
import { failedPrecondition, invalidArgument } from "../platform/errors.js";
import type { MachineUniquenessScope } from "../licensing/entitlements.js";
import type { ScopedLicense } from "../licensing/license-machines.js";

/**
 * Of `fingerprints`, the first that an alive machine of another license of the tenant holds within the license's
 * scope; undefined for none (and always under the LICENSE scope). Each fingerprint is first locked for the rest of the
 * transaction (a transaction-level advisory lock on tenant and fingerprint, taken in sorted order): a license's row
 * lock does not cover another license, so two activations of one fingerprint on two licenses would otherwise both find
 * it free. The lock is per tenant, not per scope, so licenses of policies with different scopes exclude each other too.
 */
export async function fingerprintTaken(
  em: EntityManager,
  license: ScopedLicense,
  fingerprints: string[],
): Promise<string | undefined> {
  if (license.scope === "license" || fingerprints.length === 0) return undefined;
  const sorted = [...new Set(fingerprints)].sort();
  // unnest yields the array's elements in order, so the locks are taken in that order (no deadlock between two).
  await sql(
    em,
    `select pg_advisory_xact_lock(hashtextextended('licensd:machine-fingerprint:' || $1 || ':' || f, 0))
       from unnest($2::text[]) f`,
    [license.tenantId, sorted],
  );
  const [scoped, param] =
    license.scope === "policy"
      ? ["and l.policy_id = $4", [license.policyId]]
      : license.scope === "product"
        ? ["and l.product_id = $4", [license.productId]]
        : ["", []];
  const [taken] = await sql<{ fingerprint: string }>(
    em,
    `select m.fingerprint from machines m join licenses l on l.id = m.license_id
      where m.tenant_id = $1 and m.fingerprint = any($2::text[]) and m.status = 'alive' and m.license_id <> $3
        ${scoped}
      order by m.fingerprint limit 1`,
    [license.tenantId, sorted, license.id, ...param],
  );
  return taken?.fingerprint;
}

const SCOPE_NAME: Record<MachineUniquenessScope, string> = {
  license: "license",
  policy: "policy",
  product: "product",
  tenant: "account",
};

/** Refuses a fingerprint an alive machine of another license in the license's scope holds (fingerprintTaken). */
export async function requireFingerprintFree(em: EntityManager, license: ScopedLicense, fingerprint: string) {
  if (await fingerprintTaken(em, license, [fingerprint])) {
    throw failedPrecondition(
      "MACHINE_FINGERPRINT_TAKEN",
      `fingerprint ${fingerprint} is already activated on another license of this ${SCOPE_NAME[license.scope]}; ` +
        "deactivate it there first",
      { field: "fingerprint", fingerprint, scope: license.scope },
    );
  }
}

/** Refuses a new machine that does not say how many cores it has while its policy limits them (`maxCores` > 0). */
export function requireCoresReported(maxCores: number, cores: number) {
  if (maxCores > 0 && cores < 1)
    throw invalidArgument(
      "cores",
      `the license's policy limits CPU cores (max_cores ${maxCores}): report the machine's cores, 1 or more`,
      "CORES_REQUIRED",
    );
}

/**
 * Refuses a new machine of `cores` cores that would bring the license's machines above the policy's `maxCores` (0: no
 * limit). Call under the license's row lock (the total is read after it). Every machine of the license counts, dead
 * ones too: like its seat, a dead machine keeps its cores until it is deactivated or culled.
 */
export async function requireCoresFree(em: EntityManager, license: { id: string }, maxCores: number, cores: number) {
  if (maxCores <= 0) return;
  const [row] = await sql<{ total: string }>(
    em,
    "select coalesce(sum(greatest(cores, 1)), 0) as total from machines where license_id = $1",
    [license.id],
  );
  const total = Number(row?.total ?? 0);
  if (total + cores > maxCores) {
    throw failedPrecondition(
      "CORE_LIMIT_REACHED",
      `the license's machines have ${total} of ${maxCores} cores; this machine's ${cores} would exceed the limit`,
      { license_id: license.id, max_cores: String(maxCores), cores: String(total) },
    );
  }
}
