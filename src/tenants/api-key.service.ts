import { LockMode } from "@mikro-orm/core";
import { sql, type Database, type EntityManager } from "../platform/db.js";
import type { Principal, Scope } from "../platform/auth.js";
import type { Clock } from "../platform/clock.js";
import { randomSecret, sha256 } from "../platform/crypto.js";
import { notFound } from "../platform/errors.js";
import { newId } from "../platform/ids.js";
import type { Page } from "../platform/pagination.js";
import { ApiKey } from "./api-key.entity.js";
import type { TenantService } from "./tenant.service.js";
import type { Events } from "../events/events.js";

/** `lsk_` + 43 characters of base64url: 256 bits of entropy. */
export const API_KEY_PREFIX = "lsk_";
const SHOWN_PREFIX_LENGTH = API_KEY_PREFIX.length + 8;

export interface NewApiKey {
  name: string;
  scopes: Scope[];
  expiresAt: Date | null;
}

/** API keys of tenants. Secrets are returned once and stored only as SHA-256 digests. */
export function createApiKeyService({
  db,
  clock,
  tenants,
  events,
}: {
  db: Database;
  clock: Clock;
  tenants: TenantService;
  events: Events;
}) {
  return {
    async create(
      em: EntityManager,
      actor: string,
      tenantId: string,
      input: NewApiKey,
    ): Promise<{ apiKey: ApiKey; secret: string }> {
      await tenants.get(em, tenantId);
      const secret = API_KEY_PREFIX + randomSecret(32);
      const now = clock.now();
      const apiKey = em.create(ApiKey, {
        id: newId("key"),
        tenantId,
        name: input.name,
        secretDigest: sha256(secret),
        prefix: secret.slice(0, SHOWN_PREFIX_LENGTH),
        scopes: input.scopes,
        expiresAt: input.expiresAt,
        revokedAt: null,
        createdAt: now,
        updatedAt: now,
      });
      await em.flush();
      await events.emit(em, {
        tenantId,
        type: "tenant.api_key.created",
        subject: apiKey.id,
        actor,
        payload: {
          name: apiKey.name,
          scopes: apiKey.scopes,
          prefix: apiKey.prefix,
          expires_at: apiKey.expiresAt?.toISOString() ?? null,
        },
      });
      return { apiKey, secret };
    },

    async list(em: EntityManager, tenantId: string, page: Page, showRevoked: boolean): Promise<ApiKey[]> {
      await tenants.get(em, tenantId);
      return em.find(
        ApiKey,
        {
          tenantId,
          ...(showRevoked ? {} : { revokedAt: null }),
          ...(page.after ? { id: { $gt: page.after } } : {}),
        },
        { orderBy: { id: "asc" }, limit: page.size + 1 },
      );
    },

    /** Revokes a key; `tenantId` undefined means any tenant (super-admin). Idempotent. */
    async revoke(em: EntityManager, actor: string, id: string, tenantId: string | undefined): Promise<ApiKey> {
      const apiKey = await em.findOne(
        ApiKey,
        { id, ...(tenantId ? { tenantId } : {}) },
        { lockMode: LockMode.PESSIMISTIC_WRITE },
      );
      if (!apiKey) throw notFound("api_key", id);
      await tenants.get(em, apiKey.tenantId).catch(() => {
        throw notFound("api_key", id);
      });
      if (!apiKey.revokedAt) {
        apiKey.revokedAt = clock.now();
        apiKey.updatedAt = apiKey.revokedAt;
        await em.flush();
        await events.emit(em, {
          tenantId: apiKey.tenantId,
          type: "tenant.api_key.revoked",
          subject: apiKey.id,
          actor,
          payload: { name: apiKey.name },
        });
      }
      return apiKey;
    },

    /**
     * The principal of a live key of a live tenant, or undefined. Runs on every
     * authenticated request, so it is one indexed query by digest, not an ORM load.
     */
    async resolve(secret: string): Promise<Principal | undefined> {
      const rows = await sql<{ id: string; tenant_id: string; scopes: string[] }>(
        db,
        `select k.id, k.tenant_id, k.scopes from api_keys k join tenants t on t.id = k.tenant_id
          where k.secret_digest = $1 and k.revoked_at is null and (k.expires_at is null or k.expires_at > $2)
            and t.deleted_at is null`,
        [sha256(secret), clock.now()],
      );
      const row = rows[0];
      if (!row) return undefined;
      return { kind: "tenant", tenantId: row.tenant_id, keyId: row.id, scopes: new Set(row.scopes as Scope[]) };
    },
  };
}

export type ApiKeyService = ReturnType<typeof createApiKeyService>;
