import { create } from "@bufbuild/protobuf";
import { timestampFromDate, timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { ApiKeyScope, ApiKeySchema as ApiKeyMessageSchema } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantSchema as TenantMessageSchema } from "../../gen/ts/licensd/tenant/v1/tenant_pb.js";
import type { Scope } from "../platform/auth.js";
import type { ApiKey } from "./api-key.entity.js";
import type { Tenant } from "./tenant.entity.js";

export const tenantToProto = (t: Tenant) =>
  create(TenantMessageSchema, {
    id: t.id,
    name: t.name,
    metadata: t.metadata,
    createTime: timestampFromDate(t.createdAt),
    updateTime: timestampFromDate(t.updatedAt),
  });

const SCOPE_TO_PROTO: Record<Scope, ApiKeyScope> = {
  admin: ApiKeyScope.ADMIN,
  read: ApiKeyScope.READ,
  ingest: ApiKeyScope.INGEST,
};

export const scopeFromProto = (s: ApiKeyScope): Scope => {
  const found = (Object.keys(SCOPE_TO_PROTO) as Scope[]).find((k) => SCOPE_TO_PROTO[k] === s);
  if (!found) throw new Error(`unmapped scope ${s}`); // protovalidate admits only defined, non-zero scopes
  return found;
};

export const apiKeyToProto = (k: ApiKey) =>
  create(ApiKeyMessageSchema, {
    id: k.id,
    tenantId: k.tenantId,
    name: k.name,
    scopes: k.scopes.map((s) => SCOPE_TO_PROTO[s]),
    prefix: k.prefix,
    expireTime: k.expiresAt ? timestampFromDate(k.expiresAt) : undefined,
    createTime: timestampFromDate(k.createdAt),
    revokeTime: k.revokedAt ? timestampFromDate(k.revokedAt) : undefined,
  });

export const optionalDate = (t: Timestamp | undefined): Date | null => (t ? timestampDate(t) : null);
