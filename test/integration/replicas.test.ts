import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase, sql, type Database } from "../../src/platform/db.js";
import { schema } from "../../src/entities.js";
import { createLogger } from "../../src/platform/logger.js";
import { ReplicaSet } from "../../src/platform/replicas.js";
import { notFound } from "../../src/platform/errors.js";
import { createTestDatabase } from "../support/database.js";
import { freePort } from "../support/server.js";

/**
 * ReplicaSet without a streaming replica (test/e2e/replicas.test.ts has one): servers that must never serve reads —
 * one not in recovery, one not listening — and reads that keep being answered by the primary.
 */
let pgdb: Awaited<ReturnType<typeof createTestDatabase>>;
let db: Database;
const logger = createLogger("silent");

beforeAll(async () => {
  pgdb = await createTestDatabase();
  db = await openDatabase(pgdb.url, { poolMax: 2, logger, schema });
});
afterAll(async () => {
  await db?.close();
  await pgdb?.drop();
});

const whereAmI = (on: Parameters<typeof sql>[0]) =>
  sql<{ port: number; standby: boolean }>(on, "select inet_server_port() as port, pg_is_in_recovery() as standby");

describe("replica routing", () => {
  it("a server that is not in recovery is never used as a replica, even one with the same data", async () => {
    // The same database under another spelling of its URL: reachable, current, but a primary.
    const url = pgdb.url.replace("127.0.0.1", "localhost");
    const set = await ReplicaSet.open(db, [url], { maxLagMs: 5_000, poolMax: 1, logger, schema });
    try {
      expect(set.status()).toEqual([expect.objectContaining({ state: "not a standby", lagMs: undefined })]);
      const [row] = await set.run((em) => whereAmI(em));
      expect(row!.standby).toBe(false);
      expect(set.counts).toEqual({ replica: 0, primary: 1 });
    } finally {
      await set.close();
    }
  });

  it("a replica that does not answer is skipped: reads go to the primary, without an error", async () => {
    const port = await freePort();
    const set = await ReplicaSet.open(db, [`postgres://postgres@127.0.0.1:${port}/x`], {
      maxLagMs: 5_000,
      poolMax: 1,
      logger,
      schema,
    });
    try {
      expect(set.status()).toEqual([{ name: `127.0.0.1:${port}`, state: "unreachable", lagMs: undefined }]);
      for (let i = 0; i < 3; i++) expect((await set.run((em) => whereAmI(em)))[0]!.standby).toBe(false);
      expect(set.counts).toEqual({ replica: 0, primary: 3 });
    } finally {
      await set.close();
    }
  });

  it("with no replica configured, every read runs on the primary and a domain error is the caller's", async () => {
    const set = await ReplicaSet.open(db, [], { maxLagMs: 5_000, poolMax: 1, logger, schema });
    expect(set.status()).toEqual([]);
    await expect(set.run(async () => Promise.reject(notFound("license", "lic_x")))).rejects.toThrow(/not found/);
    expect(set.counts).toEqual({ replica: 0, primary: 1 });
    await set.close();
  });
});
