import { LockMode } from "@mikro-orm/core";
import type { EntityManager } from "../platform/db.js";
import type { Clock } from "../platform/clock.js";
import { invalidArgument, notFound } from "../platform/errors.js";
import { newId } from "../platform/ids.js";
import type { Page } from "../platform/pagination.js";
import { Tenant } from "./tenant.entity.js";
import type { Events } from "../events/events.js";

export interface TenantPatch {
  name?: string;
  metadata?: Record<string, string>;
}

/** Tenants: the vendors on this installation. Every method runs inside the caller's transaction. */
export function createTenantService({ clock, events }: { clock: Clock; events: Events }) {
  /** A live (not deleted) tenant, or NOT_FOUND. */
  async function get(em: EntityManager, id: string, opts: { lock?: boolean } = {}): Promise<Tenant> {
    const tenant = await em.findOne(
      Tenant,
      { id, deletedAt: null },
      opts.lock ? { lockMode: LockMode.PESSIMISTIC_WRITE } : {},
    );
    if (!tenant) throw notFound("tenant", id);
    return tenant;
  }

  return {
    get,

    async create(
      em: EntityManager,
      actor: string,
      input: { name: string; metadata: Record<string, string> },
    ): Promise<Tenant> {
      const now = clock.now();
      const tenant = em.create(Tenant, {
        id: newId("ten"),
        name: input.name,
        metadata: input.metadata,
        createdAt: now,
        updatedAt: now,
        deletedAt: null,
      });
      await em.flush();
      await events.emit(em, {
        tenantId: tenant.id,
        type: "tenant.created",
        subject: tenant.id,
        actor,
        payload: { name: tenant.name, metadata: tenant.metadata },
      });
      return tenant;
    },

    async list(em: EntityManager, page: Page): Promise<Tenant[]> {
      return em.find(
        Tenant,
        { deletedAt: null, ...(page.after ? { id: { $gt: page.after } } : {}) },
        { orderBy: { id: "asc" }, limit: page.size + 1 },
      );
    },

    async update(em: EntityManager, actor: string, id: string, patch: TenantPatch): Promise<Tenant> {
      const tenant = await get(em, id, { lock: true });
      if (patch.name !== undefined) {
        if (patch.name.length === 0) throw invalidArgument("tenant.name", "must not be empty");
        tenant.name = patch.name;
      }
      if (patch.metadata !== undefined) tenant.metadata = patch.metadata;
      tenant.updatedAt = clock.now();
      await em.flush();
      await events.emit(em, { tenantId: id, type: "tenant.updated", subject: id, actor, payload: { ...patch } });
      return tenant;
    },

    async delete(em: EntityManager, actor: string, id: string): Promise<Tenant> {
      const tenant = await get(em, id, { lock: true });
      tenant.deletedAt = clock.now();
      tenant.updatedAt = tenant.deletedAt;
      await em.flush();
      await events.emit(em, {
        tenantId: id,
        type: "tenant.deleted",
        subject: id,
        actor,
        payload: { name: tenant.name },
      });
      return tenant;
    },
  };
}

export type TenantService = ReturnType<typeof createTenantService>;
