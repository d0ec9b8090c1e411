import { ApiKeySchema } from "./tenants/api-key.entity.js";
import { TenantSchema } from "./tenants/tenant.entity.js";
import { IdempotencyRecordSchema } from "./platform/idempotency.entity.js";
import { MachineComponentSchema, MachineSchema } from "./activation/machine.entity.js";
import { ProcessSchema } from "./activation/process.entity.js";
import { MeterSchema } from "./usage/meter.entity.js";
import type { Schema } from "./platform/db.js";
import { migrationsList } from "./migrations/index.js";
import {
  CustomerSchema,
  LicenseSchema,
  LicenseUserSchema,
  PolicySchema,
  ProductSchema,
} from "./licensing/licensing.entity.js";

/** Every entity licensd maps, for MikroORM's discovery. */
export const entities = [
  TenantSchema,
  ApiKeySchema,
  IdempotencyRecordSchema,
  ProductSchema,
  PolicySchema,
  CustomerSchema,
  LicenseSchema,
  LicenseUserSchema,
  MachineSchema,
  ProcessSchema,
  MachineComponentSchema,
  MeterSchema,
];

/** The schema the composition root opens the database with: these entities and every migration. */
export const schema: Schema = { entities, migrations: migrationsList };
