import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, splitReplicaUrls } from "../../src/config.js";
import { lsnValue, WalTimeline } from "../../src/platform/replicas.js";

const base = { LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-config-")) };
const primary = "postgres://app@db1:5432/licensd";

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig({ ...base, ...env });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe("replica settings", () => {
  it("takes one or more URLs, comma- or space-separated, keeping a multi-host URL whole; the bound defaults to 5 s", () => {
    expect(splitReplicaUrls("postgres://a/x, postgresql://b/x\n postgres://u@c1:5432,c2:5433/x")).toEqual([
      "postgres://a/x",
      "postgresql://b/x",
      "postgres://u@c1:5432,c2:5433/x",
    ]);
    const c = loadConfig({
      ...base,
      LICENSD_DATABASE_URL: primary,
      LICENSD_DATABASE_REPLICA_URL: "postgres://app@db2/licensd postgres://app@db3/licensd",
    });
    expect(c.databaseReplicaUrls).toEqual(["postgres://app@db2/licensd", "postgres://app@db3/licensd"]);
    expect(c.databaseReplicaMaxLagMs).toBe(5_000);
    expect(loadConfig({ ...base, LICENSD_DATABASE_URL: primary }).databaseReplicaUrls).toEqual([]);
  });

  it("refuses malformed or impossible replica URLs and bounds, naming the setting", () => {
    const with_ = (replica: string, more: Record<string, string> = {}) =>
      problems({ LICENSD_DATABASE_URL: primary, LICENSD_DATABASE_REPLICA_URL: replica, ...more });
    expect(with_("mysql://db2/x")).toEqual([
      "LICENSD_DATABASE_REPLICA_URL: must be a postgres:// or postgresql:// URL (several: separate them with commas " +
        "or spaces)",
    ]);
    expect(with_("postgres://db2:port/x")).toEqual(['LICENSD_DATABASE_REPLICA_URL: database URL: bad host "db2:port"']);
    expect(with_("postgres://db2/x postgres://db3:x/x")[0]).toMatch(/^LICENSD_DATABASE_REPLICA_URL \(URL 2 of 2\)/);
    expect(with_("postgres://db2/x?target_session_attrs=read-write")[0]).toContain("asks for a writable host");
    expect(with_(primary)[0]).toContain("is LICENSD_DATABASE_URL itself");
    expect(with_("postgres://db2/x postgres://db2/x")).toEqual(["LICENSD_DATABASE_REPLICA_URL: names a URL twice"]);
    expect(with_("postgres://db2/x", { LICENSD_DATABASE_REPLICA_MAX_LAG_MS: "100" })[0]).toMatch(
      /^LICENSD_DATABASE_REPLICA_MAX_LAG_MS="100": must be a whole number from 500/,
    );
    expect(problems({ LICENSD_DATABASE_REPLICA_URL: "postgres://db2/x" })[0]).toMatch(
      /^LICENSD_DATABASE_REPLICA_URL: needs LICENSD_DATABASE_URL too/,
    );
  });
});

describe("replica lag from WAL positions", () => {
  it("reads PostgreSQL's X/Y LSN text as one number", () => {
    expect(lsnValue("0/0")).toBe(0n);
    expect(lsnValue("16/B374D848")).toBe((0x16n << 32n) + 0xb374d848n);
    expect(lsnValue("1/0") > lsnValue("0/FFFFFFFF")).toBe(true);
  });

  it("a replica is fresh as of the latest primary sample its replay has reached; an idle primary shows no lag", () => {
    const t = new WalTimeline();
    t.add(1_000, 100n);
    t.add(1_250, 200n);
    t.add(1_500, 300n);
    expect(t.freshAsOf(300n)).toBe(1_500);
    expect(t.freshAsOf(250n)).toBe(1_250);
    expect(t.freshAsOf(99n)).toBeUndefined();
    // Idle: the position stays, the latest time moves on, and a replica that has it is fresh as of now.
    t.add(1_750, 300n);
    t.add(2_000, 300n);
    expect(t.freshAsOf(300n)).toBe(2_000);
    expect(t.freshAsOf(299n)).toBe(1_250);
  });
});
