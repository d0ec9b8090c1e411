import type { Database } from "./db.js";
import type { Logger } from "./logger.js";
import { PostgresTarget } from "./postgres-target.js";

/** Arbitrary but fixed: the advisory lock that serialises licensd migrations. */
const MIGRATION_LOCK = 0x11ce_45d0;

/** PostgreSQL's lock_not_available (a `lock_timeout` ran out) and deadlock_detected. */
const LOCK_CONFLICTS = new Set(["55P03", "40P01"]);
const ATTEMPTS = 20;

const lockConflict = (err: unknown): boolean => {
  for (let e: unknown = err; e instanceof Error; e = e.cause)
    if (LOCK_CONFLICTS.has((e as { code?: string }).code ?? "")) return true;
  return false;
};

/**
 * Applies pending migrations under a session advisory lock held on a connection of
 * its own, so instances starting together run them once, one after the other.
 *
 * Migrations run while the previous release serves (docs/operations.md, rolling upgrade). One that alters a table in
 * use begins with `set local lock_timeout` (shorter than PostgreSQL's deadlock_timeout): when the running instances'
 * transactions hold what it needs, it is the migration that gives up, not a request, and the whole batch (one
 * transaction) is tried again after a pause.
 */
export async function migrate(db: Database, url: string, logger: Logger): Promise<string[]> {
  const client = await PostgresTarget.parse(url).connect();
  try {
    await client.query("select pg_advisory_lock($1)", [MIGRATION_LOCK]);
    let applied: Awaited<ReturnType<typeof db.orm.migrator.up>>;
    for (let attempt = 1; ; attempt++) {
      try {
        applied = await db.orm.migrator.up();
        break;
      } catch (err) {
        if (!lockConflict(err) || attempt === ATTEMPTS) throw err;
        const waitMs = Math.min(5_000, 100 * 2 ** attempt) * (0.5 + Math.random() / 2);
        logger.warn({ attempt, waitMs: Math.round(waitMs), err }, "migration met a lock in use; trying again");
        await new Promise((r) => setTimeout(r, waitMs));
      }
    }
    const names = applied.map((m) => m.name);
    if (names.length > 0) logger.info({ migrations: names }, "applied migrations");
    else logger.info("no pending migrations");
    return names;
  } finally {
    await client.query("select pg_advisory_unlock($1)", [MIGRATION_LOCK]).catch(() => undefined);
    await client.end();
  }
}
