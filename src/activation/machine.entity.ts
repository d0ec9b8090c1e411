import { defineEntity, p } from "@mikro-orm/core";
import { baseProperties } from "../platform/base-entity.js";

export const MachineSchema = defineEntity({
  name: "Machine",
  tableName: "machines",
  properties: {
    ...baseProperties,
    licenseId: p.string(),
    fingerprint: p.string(),
    hostname: p.string(),
    platform: p.string(),
    cores: p.integer(),
    ip: p.string(),
    metadata: p.json<Record<string, string>>(),
    lastHeartbeatAt: p.datetime(),
    status: p.string().$type<"alive" | "dead">(),
    deadAt: p.datetime().nullable(),
    offline: p.boolean(),
    /** Its first heartbeat: with HEARTBEAT_BASIS_FROM_FIRST_HEARTBEAT, heartbeats are required from then on. */
    firstHeartbeatAt: p.datetime().nullable(),
  },
});
export class Machine extends MachineSchema.class {}
MachineSchema.setClass(Machine);

/** A hardware component a machine registered when it was activated (ActivateRequest.components). */
export const MachineComponentSchema = defineEntity({
  name: "MachineComponent",
  tableName: "machine_components",
  properties: {
    machineId: p.string().primary(),
    name: p.string().primary(),
    tenantId: p.string(),
    fingerprint: p.string(),
    createdAt: p.datetime(),
  },
});
export class MachineComponent extends MachineComponentSchema.class {}
MachineComponentSchema.setClass(MachineComponent);
