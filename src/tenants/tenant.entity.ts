import { defineEntity, p } from "@mikro-orm/core";

export const TenantSchema = defineEntity({
  name: "Tenant",
  tableName: "tenants",
  properties: {
    id: p.string().primary(),
    name: p.string(),
    metadata: p.json<Record<string, string>>(),
    createdAt: p.datetime(),
    updatedAt: p.datetime(),
    /** Soft delete: the audit history of a deleted tenant is kept. */
    deletedAt: p.datetime().nullable(),
  },
});

export class Tenant extends TenantSchema.class {}
TenantSchema.setClass(Tenant);
