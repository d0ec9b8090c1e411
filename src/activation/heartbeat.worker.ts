import type { Clock } from "../platform/clock.js";
import { sql, type Database } from "../platform/db.js";
import type { Logger } from "../platform/logger.js";
import { every, type Every } from "../platform/worker.js";
import type { RateLimiter } from "../platform/rate-limit.js";
import type { Events } from "../events/events.js";

/**
 * Heartbeat monitoring. Each pass:
 *  1. machines of policies with a heartbeat duration whose last heartbeat is older than
 *     duration + grace turn dead (`machine.heartbeat.dead`); under HEARTBEAT_BASIS_FROM_FIRST_HEARTBEAT
 *     only once they have heartbeated;
 *  2. dead machines of DEACTIVATE_DEAD policies whose resurrection period is over (or
 *     that have none) are deactivated, freeing the seat (`machine.deactivated`, reason
 *     `heartbeat_dead`);
 *  3. processes whose last ping is older than their heartbeat duration are removed (`process.killed`, reason
 *     `heartbeat_dead`); they stopped counting against max_processes at that moment already;
 *  4. stale rate-limit buckets are dropped.
 * Offline (air-gapped) machines never heartbeat and are never culled. Safe on many
 * instances: rows are claimed with FOR UPDATE SKIP LOCKED, each in its own transaction.
 */
export function createHeartbeatWorker(deps: {
  db: Database;
  clock: Clock;
  events: Events;
  logger: Logger;
  rateLimiter: RateLimiter;
  intervalMs: number;
}) {
  const { db, clock, events, logger, rateLimiter } = deps;
  let loop: Every | undefined;
  const BATCH = 500;

  async function markDead(): Promise<number> {
    return db.tx(async (em) => {
      const now = clock.now();
      const due = await sql<{
        id: string;
        tenant_id: string;
        license_id: string;
        fingerprint: string;
        last_ms: string;
      }>(
        em,
        `select m.id, m.tenant_id, m.license_id, m.fingerprint,
                (extract(epoch from m.last_heartbeat_at) * 1000)::bigint as last_ms
           from machines m join licenses l on l.id = m.license_id join policies p on p.id = l.policy_id
          where m.status = 'alive' and not m.offline and p.heartbeat_seconds is not null
            and (p.heartbeat_basis = 'from_activation' or m.first_heartbeat_at is not null)
            and m.last_heartbeat_at + make_interval(secs => p.heartbeat_seconds + p.heartbeat_grace_seconds) < $1
          order by m.last_heartbeat_at limit ${BATCH} for update of m skip locked`,
        [now],
      );
      for (const m of due) {
        await sql(em, `update machines set status = 'dead', dead_at = $1, updated_at = $2 where id = $3`, [
          now,
          now,
          m.id,
        ]);
        await events.emit(em, {
          tenantId: m.tenant_id,
          type: "machine.heartbeat.dead",
          subject: m.id,
          actor: "system",
          payload: {
            license_id: m.license_id,
            fingerprint: m.fingerprint,
            last_heartbeat_at: new Date(Number(m.last_ms)).toISOString(),
          },
        });
      }
      return due.length;
    });
  }

  async function cull(): Promise<number> {
    return db.tx(async (em) => {
      const now = clock.now();
      const due = await sql<{ id: string; tenant_id: string; license_id: string; fingerprint: string }>(
        em,
        `select m.id, m.tenant_id, m.license_id, m.fingerprint
           from machines m join licenses l on l.id = m.license_id join policies p on p.id = l.policy_id
          where m.status = 'dead' and p.heartbeat_cull_strategy = 'deactivate_dead'
            and m.dead_at + make_interval(secs => coalesce(p.heartbeat_resurrection_seconds, 0)) <= $1
          order by m.dead_at limit ${BATCH} for update of m skip locked`,
        [now],
      );
      for (const m of due) {
        await sql(em, `delete from machines where id = $1`, [m.id]);
        await events.emit(em, {
          tenantId: m.tenant_id,
          type: "machine.deactivated",
          subject: m.id,
          actor: "system",
          payload: { license_id: m.license_id, fingerprint: m.fingerprint, reason: "heartbeat_dead" },
        });
      }
      return due.length;
    });
  }

  async function reapProcesses(): Promise<number> {
    return db.tx(async (em) => {
      const now = clock.now();
      const due = await sql<{ id: string; tenant_id: string; license_id: string; machine_id: string; pid: string }>(
        em,
        `select id, tenant_id, license_id, machine_id, pid from processes
          where last_heartbeat_at + make_interval(secs => heartbeat_seconds) < $1
          order by last_heartbeat_at limit ${BATCH} for update skip locked`,
        [now],
      );
      for (const p of due) {
        await sql(em, `delete from processes where id = $1`, [p.id]);
        await events.emit(em, {
          tenantId: p.tenant_id,
          type: "process.killed",
          subject: p.id,
          actor: "system",
          payload: { license_id: p.license_id, machine_id: p.machine_id, pid: p.pid, reason: "heartbeat_dead" },
        });
      }
      return due.length;
    });
  }

  /** One pass (every step until nothing is left); returns what it did. */
  async function tick(): Promise<{ dead: number; culled: number; processes: number }> {
    let dead = 0;
    let culled = 0;
    let processes = 0;
    for (let n = BATCH; n === BATCH; ) dead += n = await markDead();
    for (let n = BATCH; n === BATCH; ) culled += n = await cull();
    for (let n = BATCH; n === BATCH; ) processes += n = await reapProcesses();
    await rateLimiter.purge();
    return { dead, culled, processes };
  }

  return {
    tick,
    start() {
      loop = every(
        deps.intervalMs,
        async () => {
          const r = await tick();
          if (r.dead > 0 || r.culled > 0 || r.processes > 0)
            logger.info(r, "heartbeat monitor: machines declared dead / deactivated, dead processes removed");
        },
        { name: "heartbeat monitor", logger },
      );
    },
    /** Resolves once a running pass has ended. */
    async stop() {
      await loop?.stop();
    },
  };
}

export type HeartbeatWorker = ReturnType<typeof createHeartbeatWorker>;
