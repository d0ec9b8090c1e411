import { defineEntity, p } from "@mikro-orm/core";

/** The first response to a mutation sent with an idempotency key. */
export const IdempotencyRecordSchema = defineEntity({
  name: "IdempotencyRecord",
  tableName: "idempotency_records",
  properties: {
    /** Tenant id, or `*` for the super-admin. */
    scope: p.string().primary(),
    procedure: p.string().primary(),
    key: p.string().primary(),
    requestDigest: p.blob(),
    response: p.blob(),
    createdAt: p.datetime(),
  },
});
