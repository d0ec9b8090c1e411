import { sql, type Database } from "../platform/db.js";
import type { Component, LicenseMachine, LicenseMachines, MachineProcesses } from "../licensing/license-machines.js";
import type { MachineService } from "./machine.service.js";
import { fingerprintTaken } from "./machine-uniqueness.js";

/** Activation's side of licensing's LicenseMachines port. */
export function createLicenseMachines(deps: { db: Database; machines: MachineService }): LicenseMachines {
  const { db, machines } = deps;
  return {
    // ValidateLicense's hot path: one prepared statement (not the ORM), never cached (heartbeats change it).
    ofLicense: (licenseId) =>
      sql<LicenseMachine>(
        db,
        `select fingerprint, (extract(epoch from last_heartbeat_at) * 1000)::bigint as last_ms, status, offline,
                first_heartbeat_at is not null as heartbeated, cores
           from machines where license_id = $1 order by id`,
        [licenseId],
        { name: "licensd-validate-machines" },
      ),
    // Read only for policies with max_processes: one prepared statement, never cached (pings change it).
    aliveProcesses: (licenseId, now) =>
      sql<MachineProcesses>(
        db,
        `select m.fingerprint, count(*)::int as alive
           from processes p join machines m on m.id = p.machine_id
          where p.license_id = $1 and p.last_heartbeat_at + make_interval(secs => p.heartbeat_seconds) >= $2
          group by m.fingerprint`,
        [licenseId, now],
        { name: "licensd-validate-processes" },
      ),
    async fingerprintTaken(em, license) {
      const alive = await sql<{ fingerprint: string }>(
        em,
        "select fingerprint from machines where license_id = $1 and status = 'alive'",
        [license.id],
      );
      return fingerprintTaken(
        em,
        license,
        alive.map((m) => m.fingerprint),
      );
    },
    // Only for validations that give components or whose policy requires them: one prepared statement.
    componentsOf: (licenseId, fingerprint) =>
      sql<Component>(
        db,
        `select c.name, c.fingerprint from machine_components c join machines m on m.id = c.machine_id
          where m.license_id = $1 and m.fingerprint = $2 order by c.name`,
        [licenseId, fingerprint],
        { name: "licensd-validate-components" },
      ),
    async leaseToken(licenseId, fingerprint) {
      return (await machines.leaseFor(db.em(), licenseId, fingerprint))?.token;
    },
  };
}
