import { defineEntity, p } from "@mikro-orm/core";
import { baseProperties } from "../platform/base-entity.js";

/** A running instance of the app on an activated machine (ActivationService.SpawnProcess). */
export const ProcessSchema = defineEntity({
  name: "Process",
  tableName: "processes",
  properties: {
    ...baseProperties,
    licenseId: p.string(),
    machineId: p.string(),
    /** The app's own name for it; unique per machine. */
    pid: p.string(),
    metadata: p.json<Record<string, string>>(),
    /** How long after its last ping it stays alive (the policy's, at its spawn or last ping). */
    heartbeatSeconds: p.integer(),
    lastHeartbeatAt: p.datetime(),
  },
});
export class Process extends ProcessSchema.class {}
ProcessSchema.setClass(Process);
