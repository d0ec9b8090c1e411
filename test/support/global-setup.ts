import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { startEmbeddedDatabase, type EmbeddedDatabase } from "../../src/platform/embedded-db.js";
import { createLogger } from "../../src/platform/logger.js";

const DEFAULT = "postgres://postgres@127.0.0.1:5432/test";
let embedded: EmbeddedDatabase | undefined;

async function reachable(url: string) {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  try {
    await c.connect();
    await c.end();
    return true;
  } catch {
    return false;
  }
}

/**
 * Tests run against real PostgreSQL: LICENSD_TEST_DATABASE_URL, else the machine's server
 * on 127.0.0.1:5432. On a machine with neither, an embedded PostgreSQL (the same one
 * `licensd serve` uses by default) is started for the run.
 */
export async function setup() {
  if (process.env.LICENSD_TEST_DATABASE_URL) return;
  if (await reachable(DEFAULT)) {
    process.env.LICENSD_TEST_DATABASE_URL = DEFAULT;
    return;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), "licensd-testdb-"));
  embedded = await startEmbeddedDatabase(dir, createLogger("warn"));
  process.env.LICENSD_TEST_DATABASE_URL = embedded.url;
  console.warn(`no PostgreSQL on 127.0.0.1:5432: tests use an embedded one (${dir})`);
}

export async function teardown() {
  await embedded?.stop();
}
