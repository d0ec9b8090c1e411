import { type ServerProcess, startServer } from "./server.js";

export interface Cluster {
  instances: ServerProcess[];
  databaseUrl: string;
  superAdminKey: string;
  dataKey: string;
  /** Another `licensd serve` on the same database and keys (a restart, or one more instance). */
  add(env?: Record<string, string>): Promise<ServerProcess>;
  /** Kills every instance still running (a test's end needs no graceful drain), then drops the database. */
  close(): Promise<void>;
}

/**
 * `n` real `licensd serve` processes on one fresh database of the test server (or on `databaseUrl`, e.g. a
 * pg_auto_failover formation's multi-host URL, which `close` leaves), sharing the super-admin and data keys, as several
 * instances behind a balancer would.
 */
export async function startCluster(
  n: number,
  env: Record<string, string> = {},
  opts: { databaseUrl?: string } = {},
): Promise<Cluster> {
  const first = await startServer({ env, databaseUrl: opts.databaseUrl });
  const databaseUrl = first.env.LICENSD_DATABASE_URL!;
  const shared = { ...env, LICENSD_SUPER_ADMIN_KEY: first.superAdminKey, LICENSD_DATA_KEY: first.dataKey };
  const all: ServerProcess[] = [first];
  const add = async (extra: Record<string, string> = {}) => {
    const s = await startServer({ env: { ...shared, ...extra }, databaseUrl });
    all.push(s);
    return s;
  };
  // One after the other: each applies the (already applied) migrations at start.
  for (let i = 1; i < n; i++) await add();
  return {
    instances: all.slice(0, n),
    databaseUrl,
    superAdminKey: first.superAdminKey,
    dataKey: first.dataKey,
    add,
    async close() {
      for (const s of all.reverse())
        if (s.child.exitCode === null && s.child.signalCode === null) await s.stop("SIGKILL");
      await first.dropDatabase();
    },
  };
}
