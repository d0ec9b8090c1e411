import type { Database } from "./db.js";
import type { Logger } from "./logger.js";
import { PostgresTarget } from "./postgres-target.js";

/** Arbitrary but fixed: the advisory lock that serialises licensd migrations. */
const MIGRATION_LOCK = 0x11ce_45d0;

/**
 * Applies pending migrations under a session advisory lock held on a connection of
 * its own, so instances starting together run them once, one after the other.
 */
export async function migrate(db: Database, url: string, logger: Logger): Promise<string[]> {
  const client = await PostgresTarget.parse(url).connect();
  try {
    await client.query("select pg_advisory_lock($1)", [MIGRATION_LOCK]);
    const applied = await db.orm.migrator.up();
    const names = applied.map((m) => m.name);
    if (names.length > 0) logger.info({ migrations: names }, "applied migrations");
    else logger.info("no pending migrations");
    return names;
  } finally {
    await client.query("select pg_advisory_unlock($1)", [MIGRATION_LOCK]).catch(() => undefined);
    await client.end();
  }
}
