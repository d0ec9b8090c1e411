import type { Clock } from "../platform/clock.js";
import { type DataKeys, open, seal } from "../platform/crypto.js";
import { sql, timestampOf, type EntityManager } from "../platform/db.js";
import { invalidArgument, notFound } from "../platform/errors.js";
import { newId } from "../platform/ids.js";
import type { Page } from "../platform/pagination.js";
import type { Events } from "../events/events.js";
import type { PaymentProvider } from "./payment-events.js";

/** Which policy a purchase of one provider price or product gets, and the labels copied onto its license. */
export interface PaymentMapping {
  item: string;
  policyId: string;
  metadata: Record<string, string>;
  /** The key e-mail carries a signed offline license file too. */
  attachLicenseFile: boolean;
}

export interface PaymentSource {
  id: string;
  tenantId: string;
  provider: PaymentProvider;
  description: string;
  mappings: PaymentMapping[];
  enabled: boolean;
  emailLicenseKeys: boolean;
  previousSecretExpiresAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

interface SourceRow {
  id: string;
  tenant_id: string;
  provider: PaymentProvider;
  description: string;
  mappings: { item: string; policy_id: string; metadata: Record<string, string>; attach_license_file?: boolean }[];
  enabled: boolean;
  email_license_keys: boolean;
  previous_secret_expires_at: Date | string | null;
  created_at: Date | string;
  updated_at: Date | string;
}

const SOURCE_COLUMNS = `id, tenant_id, provider, description, mappings, enabled, email_license_keys,
  previous_secret_expires_at, created_at, updated_at`;

const sourceOf = (r: SourceRow): PaymentSource => ({
  id: r.id,
  tenantId: r.tenant_id,
  provider: r.provider,
  description: r.description,
  mappings: r.mappings.map((m) => ({
    item: m.item,
    policyId: m.policy_id,
    metadata: m.metadata,
    attachLicenseFile: m.attach_license_file === true,
  })),
  enabled: r.enabled,
  emailLicenseKeys: r.email_license_keys,
  previousSecretExpiresAt: timestampOf(r.previous_secret_expires_at),
  createdAt: timestampOf(r.created_at),
  updatedAt: timestampOf(r.updated_at),
});

const mappingsJson = (mappings: PaymentMapping[]) =>
  JSON.stringify(
    mappings.map((m) => ({
      item: m.item,
      policy_id: m.policyId,
      metadata: m.metadata,
      attach_license_file: m.attachLicenseFile,
    })),
  );

/** The path a provider POSTs a source's events to, on licensd's port (provisioning/payment-hook.ts serves it). */
export const hookPath = (s: { provider: PaymentProvider; id: string }) => `/hooks/${s.provider}/${s.id}`;

/** Seals and opens a source's signing secrets under the data key, bound to the source's id. */
const sealSecret = (dataKey: DataKeys, sourceId: string, secret: string) =>
  seal(dataKey, Buffer.from(secret, "utf8"), sourceId);
const openSecret = (dataKey: DataKeys, sourceId: string, sealed: Buffer) =>
  open(dataKey, sealed, sourceId).toString("utf8");

export interface NewPaymentSource {
  provider: PaymentProvider;
  secret: string;
  description: string;
  mappings: PaymentMapping[];
  enabled: boolean;
  emailLicenseKeys: boolean;
}

export type PaymentSourcePatch = Partial<
  Pick<NewPaymentSource, "description" | "mappings" | "enabled" | "emailLicenseKeys">
>;

/** What the sources service asks of licensing (app.ts fills it): whether a policy is the tenant's. */
export interface PolicyLookup {
  policyExists(em: EntityManager, tenantId: string, policyId: string): Promise<boolean>;
}

/** Tenants' payment sources: their providers, mappings and signing secrets (given by the vendor, stored sealed). */
export function createPaymentSourceService(deps: {
  clock: Clock;
  events: Events;
  dataKey: DataKeys;
  policies: PolicyLookup;
}) {
  const { clock, events, dataKey, policies } = deps;

  /** Each item once, each policy the tenant's: INVALID_ARGUMENT naming the mapping otherwise. */
  async function checkMappings(em: EntityManager, tenantId: string, mappings: PaymentMapping[]) {
    const seen = new Set<string>();
    for (const [i, m] of mappings.entries()) {
      if (seen.has(m.item))
        throw invalidArgument(`mappings[${i}].item`, `${JSON.stringify(m.item)} is mapped twice`, "DUPLICATE_ITEM");
      seen.add(m.item);
      // Another tenant's policy reads as missing, as everywhere (NOT_FOUND's wording, INVALID_ARGUMENT's code: the
      // request names it).
      if (!(await policies.policyExists(em, tenantId, m.policyId)))
        throw invalidArgument(`mappings[${i}].policy_id`, `policy ${m.policyId} not found`, "POLICY_NOT_FOUND");
    }
    return mappings;
  }

  async function get(em: EntityManager, tenantId: string, id: string, lock = false): Promise<PaymentSource> {
    const [row] = await sql<SourceRow>(
      em,
      `select ${SOURCE_COLUMNS} from payment_sources where tenant_id = $1 and id = $2 ${lock ? "for update" : ""}`,
      [tenantId, id],
    );
    if (!row) throw notFound("payment source", id);
    return sourceOf(row);
  }

  const described = (
    s: Pick<PaymentSource, "provider" | "description" | "mappings" | "enabled" | "emailLicenseKeys">,
  ) => ({
    provider: s.provider,
    description: s.description,
    items: s.mappings.map((m) => m.item),
    enabled: s.enabled,
    email_license_keys: s.emailLicenseKeys,
  });

  return {
    get,

    /**
     * The source a hook path names, with the secrets that verify its events now (the current one first, then one
     * rotated out, during its overlap); undefined when there is no such source of this provider, or it is disabled.
     * Tenant-blind: the path is the only name the provider has for it.
     */
    async forHook(em: EntityManager, provider: PaymentProvider, id: string) {
      const [row] = await sql<SourceRow & { secret_sealed: Buffer; previous_secret_sealed: Buffer | null }>(
        em,
        `select ${SOURCE_COLUMNS}, secret_sealed, previous_secret_sealed from payment_sources s
          where id = $1 and provider = $2 and enabled
            and exists (select 1 from tenants t where t.id = s.tenant_id and t.deleted_at is null)`,
        [id, provider],
      );
      if (!row) return undefined;
      const secrets = [openSecret(dataKey, row.id, row.secret_sealed)];
      const expires = timestampOf(row.previous_secret_expires_at);
      if (row.previous_secret_sealed && expires && expires > clock.now())
        secrets.push(openSecret(dataKey, row.id, row.previous_secret_sealed));
      return { source: sourceOf(row), secrets };
    },

    async create(em: EntityManager, tenantId: string, actor: string, input: NewPaymentSource) {
      const mappings = await checkMappings(em, tenantId, input.mappings);
      const id = newId("psrc");
      const now = clock.now();
      await sql(
        em,
        `insert into payment_sources (id, tenant_id, provider, description, mappings, enabled, email_license_keys,
           secret_sealed, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)`,
        [
          id,
          tenantId,
          input.provider,
          input.description,
          mappingsJson(mappings),
          input.enabled,
          input.emailLicenseKeys,
          sealSecret(dataKey, id, input.secret),
          now,
        ],
      );
      await events.emit(em, {
        tenantId,
        type: "payment_source.created",
        subject: id,
        actor,
        payload: described({ ...input, mappings }),
      });
      return get(em, tenantId, id);
    },

    async list(em: EntityManager, tenantId: string, page: Page): Promise<PaymentSource[]> {
      const rows = await sql<SourceRow>(
        em,
        `select ${SOURCE_COLUMNS} from payment_sources where tenant_id = $1 and ($2::text is null or id > $2)
          order by id limit $3`,
        [tenantId, page.after ?? null, page.size + 1],
      );
      return rows.map(sourceOf);
    },

    async update(em: EntityManager, tenantId: string, actor: string, id: string, patch: PaymentSourcePatch) {
      const before = await get(em, tenantId, id, true);
      const next = {
        description: patch.description ?? before.description,
        mappings: patch.mappings === undefined ? before.mappings : await checkMappings(em, tenantId, patch.mappings),
        enabled: patch.enabled ?? before.enabled,
        emailLicenseKeys: patch.emailLicenseKeys ?? before.emailLicenseKeys,
      };
      await sql(
        em,
        `update payment_sources set description = $3, mappings = $4, enabled = $5, email_license_keys = $6,
           updated_at = $7 where tenant_id = $1 and id = $2`,
        [tenantId, id, next.description, mappingsJson(next.mappings), next.enabled, next.emailLicenseKeys, clock.now()],
      );
      await events.emit(em, {
        tenantId,
        type: "payment_source.updated",
        subject: id,
        actor,
        payload: {
          changed: Object.keys(patch).map((k) => (k === "emailLicenseKeys" ? "email_license_keys" : k)),
          ...described({ provider: before.provider, ...next }),
        },
      });
      return get(em, tenantId, id);
    },

    /** The provider's new secret; the current one is still accepted for `overlapMs` (0: dropped now, and any older). */
    async rotateSecret(
      em: EntityManager,
      tenantId: string,
      actor: string,
      id: string,
      secret: string,
      overlapMs: number,
    ) {
      await get(em, tenantId, id, true);
      const [{ secret_sealed: current }] = (await sql<{ secret_sealed: Buffer }>(
        em,
        `select secret_sealed from payment_sources where id = $1`,
        [id],
      )) as [{ secret_sealed: Buffer }];
      const now = clock.now();
      const keep = overlapMs > 0;
      await sql(
        em,
        `update payment_sources set secret_sealed = $2, previous_secret_sealed = $3, previous_secret_expires_at = $4,
           updated_at = $5 where id = $1`,
        [
          id,
          sealSecret(dataKey, id, secret),
          // Re-sealed, not copied: during a data-key rotation the old secret may still be under the previous key.
          keep ? sealSecret(dataKey, id, openSecret(dataKey, id, current)) : null,
          keep ? new Date(now.getTime() + overlapMs) : null,
          now,
        ],
      );
      await events.emit(em, {
        tenantId,
        type: "payment_source.secret_rotated",
        subject: id,
        actor,
        payload: { overlap_seconds: Math.round(overlapMs / 1000) },
      });
      return get(em, tenantId, id);
    },

    async delete(em: EntityManager, tenantId: string, actor: string, id: string) {
      const source = await get(em, tenantId, id, true);
      await sql(em, `delete from payment_sources where tenant_id = $1 and id = $2`, [tenantId, id]);
      await events.emit(em, {
        tenantId,
        type: "payment_source.deleted",
        subject: id,
        actor,
        payload: described(source),
      });
      return source;
    },
  };
}

export type PaymentSourceService = ReturnType<typeof createPaymentSourceService>;
