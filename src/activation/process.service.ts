import type { Clock } from "../platform/clock.js";
import { flushUnique, sql, type EntityManager } from "../platform/db.js";
import { alreadyExists, failedPrecondition, notFound } from "../platform/errors.js";
import { newId } from "../platform/ids.js";
import type { Page } from "../platform/pagination.js";
import type { Events } from "../events/events.js";
import type { License, Policy } from "../licensing/licensing.entity.js";
import type { Machine } from "./machine.entity.js";
import type { MachineService } from "./machine.service.js";
import { Process } from "./process.entity.js";

/** A process's heartbeat duration when its policy sets none (Keygen's default too). */
export const DEFAULT_PROCESS_HEARTBEAT_SECONDS = 600;

/** When a process dies unless it pings again. */
export const processDeadline = (p: Pick<Process, "lastHeartbeatAt" | "heartbeatSeconds">) =>
  new Date(p.lastHeartbeatAt.getTime() + p.heartbeatSeconds * 1000);

/** Alive: its last ping is within its heartbeat duration (the deadline itself still counts). */
export const processAlive = (p: Pick<Process, "lastHeartbeatAt" | "heartbeatSeconds">, now: Date) =>
  processDeadline(p).getTime() >= now.getTime();

/** Who acts on a process: the app with its license key, or an admin of the tenant. */
export type ProcessCaller = { key: string } | { tenantId: string };

export interface NewProcess {
  pid: string;
  metadata: Record<string, string>;
}

/** What a running app's machine is: its license, the license's policy, the machine. */
interface Holder {
  license: License;
  policy: Policy;
  machine: Machine;
}

/**
 * Processes of running apps on activated machines: at most the policy's max_processes alive at once, per machine or
 * per license. Counted under that row's lock, so concurrent spawns on any instance count each other. Every method runs
 * in the caller's transaction.
 */
export function createProcessService(deps: { clock: Clock; events: Events; machines: MachineService }) {
  const { clock, events, machines } = deps;

  const emit = (em: EntityManager, p: Process, actor: string, type: string, extra: Record<string, string> = {}) =>
    events.emit(em, {
      tenantId: p.tenantId,
      type,
      subject: p.id,
      actor,
      payload: { license_id: p.licenseId, machine_id: p.machineId, pid: p.pid, ...extra },
    });

  const heartbeatSecondsOf = (policy: Policy) => policy.processHeartbeatSeconds ?? DEFAULT_PROCESS_HEARTBEAT_SECONDS;

  async function spawn(
    em: EntityManager,
    { license, policy, machine }: Holder,
    actor: string,
    input: NewProcess,
    opts: { adopt: boolean },
  ): Promise<Process> {
    const perLicense = policy.processLeasingStrategy === "per_license";
    // The row the limit is counted under, locked first: concurrent spawns of its scope queue here. The machine is
    // locked either way (for key share under PER_LICENSE), so one deleted meanwhile is NOT_FOUND, not a broken key.
    if (perLicense) await sql(em, `select 1 from licenses where id = $1 for update`, [license.id]);
    const held = await sql(em, `select 1 from machines where id = $1 for ${perLicense ? "key share" : "update"}`, [
      machine.id,
    ]);
    if (held.length === 0) throw notFound("machine", machine.id);
    const now = clock.now();
    const existing = await em.findOne(Process, { machineId: machine.id, pid: input.pid }, { refresh: true });
    if (existing && processAlive(existing, now)) {
      if (opts.adopt) return ping(em, existing, policy);
      throw alreadyExists("PROCESS_EXISTS", `machine ${machine.id} already runs a process with pid ${input.pid}`, {
        machine_id: machine.id,
        pid: input.pid,
      });
    }
    if (existing) await remove(em, existing, "system", "heartbeat_dead");
    const max = policy.maxProcesses;
    if (max > 0) {
      const [{ n }] = await sql<{ n: number }>(
        em,
        `select count(*)::int as n from processes
          where ${perLicense ? "license_id" : "machine_id"} = $1
            and last_heartbeat_at + make_interval(secs => heartbeat_seconds) >= $2`,
        [perLicense ? license.id : machine.id, now],
      );
      if (n >= max) {
        const scope = perLicense ? "license" : "machine";
        throw failedPrecondition(
          "PROCESS_LIMIT_REACHED",
          `the ${scope} runs ${n} processes, the most its policy allows (max_processes ${max} per ${scope}); ` +
            "kill one first",
          {
            license_id: license.id,
            machine_id: machine.id,
            max_processes: String(max),
            process_leasing_strategy: policy.processLeasingStrategy,
          },
        );
      }
    }
    const process = em.create(Process, {
      id: newId("proc"),
      tenantId: license.tenantId,
      licenseId: license.id,
      machineId: machine.id,
      pid: input.pid,
      metadata: input.metadata,
      heartbeatSeconds: heartbeatSecondsOf(policy),
      lastHeartbeatAt: now,
      createdAt: now,
      updatedAt: now,
    });
    // Only under PER_LICENSE two machines' locks differ; the same pid on one machine is serialized either way.
    await flushUnique(em, () =>
      alreadyExists("PROCESS_EXISTS", `machine ${machine.id} already runs a process with pid ${input.pid}`, {
        machine_id: machine.id,
        pid: input.pid,
      }),
    );
    await emit(em, process, actor, "process.spawned");
    return process;
  }

  async function ping(em: EntityManager, process: Process, policy: Policy): Promise<Process> {
    const now = clock.now();
    if (!processAlive(process, now))
      throw failedPrecondition(
        "PROCESS_DEAD",
        `process ${process.id} missed its heartbeat at ${processDeadline(process).toISOString()}; spawn it again`,
        { process_id: process.id },
      );
    process.heartbeatSeconds = heartbeatSecondsOf(policy);
    process.lastHeartbeatAt = now;
    process.updatedAt = now;
    await em.flush();
    return process;
  }

  async function remove(em: EntityManager, process: Process, actor: string, reason: string) {
    em.remove(process);
    await em.flush();
    await emit(em, process, actor, "process.killed", { reason });
    return process;
  }

  /** The process a caller names: with a key, only a process of the key's license; NOT_FOUND otherwise. */
  async function find(em: EntityManager, caller: ProcessCaller, id: string) {
    if ("key" in caller) {
      const license = await machines.licenseByKey(em, caller.key);
      const process = await em.findOne(Process, { id, licenseId: license.id });
      if (!process) throw notFound("process", id);
      return { process, actor: `license:${license.id}` };
    }
    const process = await em.findOne(Process, { id, tenantId: caller.tenantId });
    if (!process) throw notFound("process", id);
    return { process, actor: "" };
  }

  return {
    /**
     * Spawns a process of the app on its machine (license key and fingerprint). With `adopt`, a live process of the
     * same pid is pinged and returned instead of refused (a ConnectLease stream reconnecting).
     */
    async spawnByKey(
      em: EntityManager,
      key: string,
      fingerprint: string,
      input: NewProcess,
      opts = { adopt: false },
    ): Promise<Process> {
      const holder = await machines.runningByKey(em, key, fingerprint);
      return spawn(em, holder, `license:${holder.license.id}`, input, opts);
    },

    /** Spawns a process on a machine named by id (an admin's call). */
    async spawnByMachine(em: EntityManager, tenantId: string, actor: string, machineId: string, input: NewProcess) {
      return spawn(em, await machines.runningById(em, tenantId, machineId), actor, input, { adopt: false });
    },

    /** Keeps a live process alive for another heartbeat duration (the policy's now); PROCESS_DEAD once it missed it. */
    async ping(em: EntityManager, caller: ProcessCaller, id: string): Promise<Process> {
      const { process } = await find(em, caller, id);
      const { policy } = await machines.runningById(em, process.tenantId, process.machineId);
      return ping(em, process, policy);
    },

    /** Ends a process, freeing its slot (`process.killed`). */
    async kill(em: EntityManager, caller: ProcessCaller, actor: string, id: string): Promise<Process> {
      const found = await find(em, caller, id);
      return remove(em, found.process, actor || found.actor, "killed");
    },

    /** A process of the tenant; NOT_FOUND for another tenant's. */
    async get(em: EntityManager, tenantId: string, id: string): Promise<Process> {
      const process = await em.findOne(Process, { id, tenantId });
      if (!process) throw notFound("process", id);
      return process;
    },

    /** One page of the tenant's processes, oldest first, of a license and/or a machine when given. */
    list: (em: EntityManager, tenantId: string, page: Page, filter: { licenseId: string; machineId: string }) =>
      em.find(
        Process,
        {
          tenantId,
          ...(filter.licenseId ? { licenseId: filter.licenseId } : {}),
          ...(filter.machineId ? { machineId: filter.machineId } : {}),
          ...(page.after ? { id: { $gt: page.after } } : {}),
        },
        { orderBy: { id: "asc" }, limit: page.size + 1 },
      ),
  };
}

export type ProcessService = ReturnType<typeof createProcessService>;
