import { defineEntity, p } from "@mikro-orm/core";
import { baseProperties } from "../platform/base-entity.js";

export type ApiKeyScope = "admin" | "read" | "ingest";

export const ApiKeySchema = defineEntity({
  name: "ApiKey",
  tableName: "api_keys",
  properties: {
    ...baseProperties,
    name: p.string(),
    /** SHA-256 of the secret: the only form in which the secret is kept. */
    secretDigest: p.blob(),
    prefix: p.string(),
    scopes: p.array<ApiKeyScope>(),
    expiresAt: p.datetime().nullable(),
    revokedAt: p.datetime().nullable(),
  },
});

export class ApiKey extends ApiKeySchema.class {}
ApiKeySchema.setClass(ApiKey);
