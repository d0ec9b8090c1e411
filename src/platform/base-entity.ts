import { p } from "@mikro-orm/core";

/** Columns every tenant-owned row has (tenants themselves have all but tenantId). */
export const baseProperties = {
  id: p.string().primary(),
  tenantId: p.string(),
  createdAt: p.datetime(),
  updatedAt: p.datetime(),
};
