import { ApiKeySchema } from "./tenants/api-key.entity.js";
import { TenantSchema } from "./tenants/tenant.entity.js";
import { IdempotencyRecordSchema } from "./platform/idempotency.entity.js";
import { MachineSchema } from "./activation/machine.entity.js";
import { MeterSchema } from "./usage/meter.entity.js";
import { CustomerSchema, LicenseSchema, PolicySchema, ProductSchema } from "./licensing/licensing.entity.js";

/** Every entity licensd maps, for MikroORM's discovery. */
export const entities = [TenantSchema, ApiKeySchema, IdempotencyRecordSchema, ProductSchema, PolicySchema, CustomerSchema, LicenseSchema, MachineSchema, MeterSchema];
