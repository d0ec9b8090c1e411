import type { Clock } from "../platform/clock.js";
import { sql, type Database } from "../platform/db.js";
import type { Logger } from "../platform/logger.js";
import { every, type Every } from "../platform/worker.js";
import type { Events } from "../events/events.js";

/**
 * Background work on licenses. Today: licenses whose policy says REVOKE_ACCESS are
 * revoked once their grace period is over (validation already refuses them from that
 * moment; this makes the stored status and the audit log say so). Safe on many
 * instances: rows are claimed with FOR UPDATE SKIP LOCKED.
 */
export function createLicenseWorker(deps: {
  db: Database;
  clock: Clock;
  events: Events;
  logger: Logger;
  intervalMs?: number;
}) {
  const { db, clock, events, logger } = deps;
  let loop: Every | undefined;

  /** One pass; returns how many licenses it revoked. */
  async function tick(): Promise<number> {
    return db.tx(async (em) => {
      const now = clock.now();
      const due = await sql<{ id: string; tenant_id: string }>(
        em,
        `select l.id, l.tenant_id from licenses l join policies p on p.id = l.policy_id
          where l.status = 'active' and p.expiration_strategy = 'revoke_access'
            and l.expires_at + make_interval(secs => p.grace_seconds) <= $1
          order by l.id limit 500 for update of l skip locked`,
        [now],
      );
      for (const l of due) {
        await sql(em, `update licenses set status = 'revoked', revoked_at = $1, updated_at = $2 where id = $3`, [
          now,
          now,
          l.id,
        ]);
        await events.emit(em, {
          tenantId: l.tenant_id,
          type: "license.revoked",
          subject: l.id,
          actor: "system",
          payload: { reason: "expired (REVOKE_ACCESS policy)" },
        });
      }
      return due.length;
    });
  }

  return {
    tick,
    start() {
      loop = every(
        deps.intervalMs ?? 60_000,
        async () => {
          const n = await tick();
          if (n > 0) logger.info({ revoked: n }, "revoked licenses past their grace period");
        },
        { name: "license worker", logger },
      );
    },
    /** Resolves once a running pass has ended. */
    async stop() {
      await loop?.stop();
    },
  };
}

export type LicenseWorker = ReturnType<typeof createLicenseWorker>;
