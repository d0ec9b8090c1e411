import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  CreateApiKeyRequestSchema,
  CreateApiKeyResponseSchema,
  CreateTenantRequestSchema,
  CreateTenantResponseSchema,
  DeleteTenantRequestSchema,
  DeleteTenantResponseSchema,
  GetTenantResponseSchema,
  ListApiKeysResponseSchema,
  ListTenantsResponseSchema,
  RevokeApiKeyRequestSchema,
  RevokeApiKeyResponseSchema,
  type TenantService as TenantServiceDesc,
  UpdateTenantRequestSchema,
  UpdateTenantResponseSchema,
} from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { actorOf, requireSuperAdmin, requireTenant } from "../platform/auth.js";
import { principalKey } from "../platform/context.js";
import type { Database } from "../platform/db.js";
import type { ReplicaReads } from "../platform/replicas.js";
import { invalidArgument } from "../platform/errors.js";
import type { Idempotency } from "../platform/idempotency.js";
import type { PageTokens } from "../platform/pagination.js";
import { procedureOf, tenantMutation } from "../platform/rpc.js";
import type { ApiKeyService } from "./api-key.service.js";
import { apiKeyToProto, optionalDate, scopeFromProto, tenantToProto } from "./tenant.mapper.js";
import type { TenantPatch, TenantService } from "./tenant.service.js";

const UPDATABLE = new Set(["name", "metadata"]);

/** The Connect implementation of licensd.tenant.v1.TenantService. */
export function createTenantRpc(deps: {
  db: Database;
  /** Lists and other reads that tolerate bounded staleness (docs/replicas.md). */
  reads: ReplicaReads;
  idempotency: Idempotency;
  tenants: TenantService;
  apiKeys: ApiKeyService;
  pages: PageTokens;
}): ServiceImpl<typeof TenantServiceDesc> {
  const { db, reads, idempotency, tenants, apiKeys, pages } = deps;
  return {
    async createTenant(req, ctx) {
      requireSuperAdmin(ctx.values.get(principalKey));
      const call = {
        scope: "*",
        procedure: procedureOf(ctx),
        requestSchema: CreateTenantRequestSchema,
        request: req,
        responseSchema: CreateTenantResponseSchema,
      };
      return idempotency.run(call, async (em) => {
        const tenant = await tenants.create(em, actorOf(ctx.values.get(principalKey)), {
          name: req.name,
          metadata: req.metadata,
        });
        return create(CreateTenantResponseSchema, { tenant: tenantToProto(tenant) });
      });
    },

    async getTenant(req, ctx) {
      const principal = ctx.values.get(principalKey);
      const tenantId = requireTenant(principal, req.id, "read", "id");
      const tenant = await tenants.get(db.em(), tenantId);
      return create(GetTenantResponseSchema, { tenant: tenantToProto(tenant) });
    },

    async listTenants(req, ctx) {
      requireSuperAdmin(ctx.values.get(principalKey));
      const page = pages.read(req.pageSize, req.pageToken, { list: procedureOf(ctx), tenantId: "*" });
      const { items, nextPageToken } = pages.pageOf(await reads.run((em) => tenants.list(em, page)), page);
      return create(ListTenantsResponseSchema, { tenants: items.map(tenantToProto), nextPageToken });
    },

    async updateTenant(req, ctx) {
      requireSuperAdmin(ctx.values.get(principalKey));
      const paths = req.updateMask!.paths;
      if (paths.length === 0) throw invalidArgument("update_mask", "name at least one field: name, metadata");
      const unknown = paths.find((p) => !UPDATABLE.has(p));
      if (unknown !== undefined)
        throw invalidArgument("update_mask", `${JSON.stringify(unknown)} is not updatable (name, metadata are)`);
      const patch: TenantPatch = {};
      if (paths.includes("name")) patch.name = req.tenant!.name;
      if (paths.includes("metadata")) patch.metadata = req.tenant!.metadata;
      const call = {
        scope: "*",
        procedure: procedureOf(ctx),
        requestSchema: UpdateTenantRequestSchema,
        request: req,
        responseSchema: UpdateTenantResponseSchema,
      };
      return idempotency.run(call, async (em) => {
        const tenant = await tenants.update(em, actorOf(ctx.values.get(principalKey)), req.tenant!.id, patch);
        return create(UpdateTenantResponseSchema, { tenant: tenantToProto(tenant) });
      });
    },

    async deleteTenant(req, ctx) {
      requireSuperAdmin(ctx.values.get(principalKey));
      const call = {
        scope: "*",
        procedure: procedureOf(ctx),
        requestSchema: DeleteTenantRequestSchema,
        request: req,
        responseSchema: DeleteTenantResponseSchema,
      };
      return idempotency.run(call, async (em) => {
        const tenant = await tenants.delete(em, actorOf(ctx.values.get(principalKey)), req.id);
        return create(DeleteTenantResponseSchema, { tenant: tenantToProto(tenant) });
      });
    },

    createApiKey: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        { requestSchema: CreateApiKeyRequestSchema, request: req, responseSchema: CreateApiKeyResponseSchema },
        async (em, m) => {
          const { apiKey, secret } = await apiKeys.create(em, m.actor, m.tenantId, {
            name: req.name,
            scopes: req.scopes.map(scopeFromProto),
            expiresAt: optionalDate(req.expireTime),
          });
          return create(CreateApiKeyResponseSchema, { apiKey: apiKeyToProto(apiKey), secret });
        },
      ),

    async listApiKeys(req, ctx) {
      const tenantId = requireTenant(ctx.values.get(principalKey), req.tenantId, "admin");
      const page = pages.read(req.pageSize, req.pageToken, {
        list: procedureOf(ctx),
        tenantId,
        filters: { showRevoked: req.showRevoked },
      });
      const rows = await reads.run((em) => apiKeys.list(em, tenantId, page, req.showRevoked));
      const { items, nextPageToken } = pages.pageOf(rows, page);
      return create(ListApiKeysResponseSchema, { apiKeys: items.map(apiKeyToProto), nextPageToken });
    },

    async revokeApiKey(req, ctx) {
      const principal = ctx.values.get(principalKey);
      // The key id names the tenant; a tenant key may revoke only its own tenant's keys.
      const tenantId = principal.kind === "super_admin" ? undefined : requireTenant(principal, "", "admin");
      const call = {
        scope: tenantId ?? "*",
        procedure: procedureOf(ctx),
        requestSchema: RevokeApiKeyRequestSchema,
        request: req,
        responseSchema: RevokeApiKeyResponseSchema,
      };
      return idempotency.run(call, async (em) => {
        const apiKey = await apiKeys.revoke(em, actorOf(principal), req.id, tenantId);
        return create(RevokeApiKeyResponseSchema, { apiKey: apiKeyToProto(apiKey) });
      });
    },
  };
}
