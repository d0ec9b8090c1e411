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
    /**
     * The first response's protobuf binary, sealed under the data key (crypto.seal); null only for answers an upgrade
     * discarded.
     */
    responseSealed: p.blob().nullable(),
    createdAt: p.datetime(),
  },
});
