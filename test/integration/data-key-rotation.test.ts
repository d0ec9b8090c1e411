/*
 * The data-key material (keys derived from the data key, stored sealed so they survive a rotation) and the re-seal
 * sweep behind `licensd data-key rotate` / `check`, against PostgreSQL.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DataKeyring, open, seal } from "../../src/platform/crypto.js";
import {
  DataKeyError,
  deriveDataKeyMaterial,
  loadDataKeyMaterial,
  materialAad,
} from "../../src/platform/data-key-material.js";
import { SEALED_COLUMNS, sweepSealedValues } from "../../src/platform/data-key-rotation.js";
import { sql } from "../../src/platform/db.js";
import { recordAad } from "../../src/platform/idempotency.js";
import { startTestApp, type TestApp } from "../support/app.js";
import { query } from "../support/database.js";
import { run } from "../support/server.js";

const oldKey = randomBytes(32);
const newKey = randomBytes(32);
const strangerKey = randomBytes(32);
let a: TestApp;

beforeAll(async () => {
  a = await startTestApp({ env: { LICENSD_DATA_KEY: oldKey.toString("base64") } });
});
afterAll(async () => {
  await a?.close();
});

describe("data-key material", () => {
  it("is what the data key derived before it was stored, so an existing install keeps its keys", async () => {
    expect(a.app.dataKeyMaterial).toEqual(deriveDataKeyMaterial(oldKey));
    expect(a.app.licenseKeySecrets).toEqual({ "0": deriveDataKeyMaterial(oldKey).licenseKeyHmacV0 });
    const rows = await query<{ name: string; sealed: Buffer }>(
      a.databaseUrl,
      "select name, sealed from data_key_material",
    );
    expect(rows.map((r) => r.name).sort()).toEqual(["audit-hmac-dk1", "license-key-hmac-v0", "page-tokens-v1"]);
    // Stored sealed, never in clear.
    for (const r of rows) expect(open(oldKey, r.sealed, materialAad(r.name)).length).toBe(32);
  });

  it("is created once by concurrent first starts, which all read the same values", async () => {
    await sql(a.app.db, "delete from data_key_material");
    const ring = new DataKeyring(oldKey);
    const loaded = await Promise.all(Array.from({ length: 6 }, () => loadDataKeyMaterial(a.app.db, ring)));
    for (const m of loaded) expect(m).toEqual(deriveDataKeyMaterial(oldKey));
    expect(await query(a.databaseUrl, "select name from data_key_material")).toHaveLength(3);
  });

  it("is not created from a wrong key on an install that has sealed values already (an upgrade)", async () => {
    await sql(a.app.db, "delete from data_key_material");
    await expect(loadDataKeyMaterial(a.app.db, new DataKeyring(strangerKey))).rejects.toThrow(
      /^no configured data key opens signing key sk_\w+ stored in this database: .*LICENSD_DATA_KEY \(fingerprint/,
    );
    expect(await query(a.databaseUrl, "select name from data_key_material")).toEqual([]);
    expect(await loadDataKeyMaterial(a.app.db, new DataKeyring(oldKey))).toEqual(deriveDataKeyMaterial(oldKey));
  });

  it("refuses a start whose keys open none of it, naming both settings", async () => {
    const wrong = loadDataKeyMaterial(a.app.db, new DataKeyring(strangerKey));
    await expect(wrong).rejects.toBeInstanceOf(DataKeyError);
    await expect(wrong).rejects.toThrow(
      /no configured data key opens the data-key material .*LICENSD_DATA_KEY \(fingerprint [0-9a-f]{8}\) \(LICENSD_DATA_KEY_PREVIOUS is unset\)/,
    );
    await expect(loadDataKeyMaterial(a.app.db, new DataKeyring(strangerKey, [randomBytes(32)]))).rejects.toThrow(
      /LICENSD_DATA_KEY_PREVIOUS \(fingerprints [0-9a-f]{8}\)/,
    );
    // The old key as a previous one opens it, and the values are the same.
    expect(await loadDataKeyMaterial(a.app.db, new DataKeyring(newKey, [oldKey]))).toEqual(
      deriveDataKeyMaterial(oldKey),
    );
  });
});

describe("the re-seal sweep", () => {
  it("knows every sealed column the migrations created", async () => {
    const columns = await query<{ table_name: string; column_name: string }>(
      a.databaseUrl,
      `select table_name, column_name from information_schema.columns
        where table_schema = current_schema() and data_type = 'bytea' and column_name like '%sealed%'`,
    );
    const known = SEALED_COLUMNS.flatMap((t) => t.columns.map((c) => `${t.table}.${c}`)).sort();
    expect(columns.map((c) => `${c.table_name}.${c.column_name}`).sort()).toEqual(known);
  });

  it("re-seals every value under the previous key, in batches, reports one under no key, and leaves the rest", async () => {
    const db = a.app.db;
    // 250 recorded answers under the old key (some empty: a call still running), and one sealed under a key nobody has.
    const plain = (i: number) => Buffer.from(`answer ${i}`);
    for (let i = 0; i < 250; i++) {
      const key = `k${String(i).padStart(4, "0")}`;
      const aad = recordAad("ten_x", "/p", key);
      await sql(
        db,
        `insert into idempotency_records (scope, procedure, key, request_digest, response_sealed, created_at)
         values ('ten_x', '/p', $1, $2, $3, now())`,
        [key, randomBytes(32), i % 50 === 7 ? null : seal(i === 123 ? strangerKey : oldKey, plain(i), aad)],
      );
    }
    const before = await countSealed();
    const ring = new DataKeyring(newKey, [oldKey]);

    const check = await sweepSealedValues(db, ring, { reseal: false, batchSize: 40 });
    const idem = check.tables.find((t) => t.table === "idempotency_records")!;
    expect(idem).toEqual({
      table: "idempotency_records",
      values: 245,
      current: 0,
      previous: 244,
      resealed: 0,
      unopenable: 1,
    });
    expect(check.unopenable).toEqual([
      { table: "idempotency_records", id: "ten_x//p/k0123", column: "response_sealed" },
    ]);
    expect(check.tables.find((t) => t.table === "data_key_material")).toMatchObject({ values: 3, previous: 3 });
    expect(check.tables.find((t) => t.table === "signing_keys")).toMatchObject({ values: 1, previous: 1 });
    expect(await countSealed()).toEqual(before); // a check writes nothing

    // Two rotations at once (two operators, or a retried one): each value is re-sealed exactly once.
    const [r1, r2] = await Promise.all([
      sweepSealedValues(db, ring, { reseal: true, batchSize: 40 }),
      sweepSealedValues(db, ring, { reseal: true, batchSize: 17 }),
    ]);
    const resealed = (t: string) =>
      r1.tables.find((x) => x.table === t)!.resealed + r2.tables.find((x) => x.table === t)!.resealed;
    expect(resealed("idempotency_records")).toBe(244);
    expect(resealed("data_key_material")).toBe(3);
    expect(resealed("signing_keys")).toBe(1);
    expect(r1.unopenable).toEqual(check.unopenable);

    // Every value now opens under the new key alone, with the same plaintext; the stranger's is untouched.
    const rows = await query<{ key: string; response_sealed: Buffer | null }>(
      a.databaseUrl,
      "select key, response_sealed from idempotency_records where scope = 'ten_x' order by key",
    );
    for (const [i, r] of rows.entries()) {
      if (i % 50 === 7) expect(r.response_sealed).toBeNull();
      else if (i === 123)
        expect(open(strangerKey, r.response_sealed!, recordAad("ten_x", "/p", r.key))).toEqual(plain(i));
      else expect(open(newKey, r.response_sealed!, recordAad("ten_x", "/p", r.key))).toEqual(plain(i));
    }

    // Resumable and idempotent: run again, nothing left to do; check counts nothing under the previous key.
    const again = await sweepSealedValues(db, ring, { reseal: true });
    expect(again.tables.reduce((n, t) => n + t.resealed + t.previous, 0)).toBe(0);
    const after = await sweepSealedValues(db, ring, { reseal: false });
    expect(after.tables.reduce((n, t) => n + t.previous, 0)).toBe(0);
    expect(after.unopenable).toHaveLength(1);
    // The new key alone opens the material, and it is the same as before the rotation.
    expect(await loadDataKeyMaterial(db, new DataKeyring(newKey))).toEqual(deriveDataKeyMaterial(oldKey));
    await expect(loadDataKeyMaterial(db, new DataKeyring(oldKey))).rejects.toThrow(/LICENSD_DATA_KEY/);
  });
});

describe("licensd data-key (the CLI, on the same database)", () => {
  const cli = (args: string[], keys: Record<string, string>) =>
    run("bash", ["scripts/with-node.sh", "node", "bin/licensd.js", ...args], {
      env: {
        LICENSD_DATABASE_URL: a.databaseUrl,
        LICENSD_SUPER_ADMIN_KEY: a.superAdminKey,
        LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-cli-")),
        LICENSD_DATA_KEY_PREVIOUS: "",
        ...keys,
      },
    });
  const asNew = { LICENSD_DATA_KEY: newKey.toString("base64") };

  it("generate prints a fresh 32-byte key", async () => {
    const [one, two] = await Promise.all([cli(["data-key", "generate"], {}), cli(["data-key", "generate"], {})]);
    expect(one.code).toBe(0);
    expect(Buffer.from(one.stdout.trim(), "base64")).toHaveLength(32);
    expect(one.stdout).not.toBe(two.stdout);
  });

  it("check and rotate name a value under no key by table and id, and exit 1; check counts previous-key values", async () => {
    // From the sweep above: everything is under the new key but one answer, sealed under a key nobody has.
    const check = await cli(["data-key", "check"], asNew);
    expect(check.code).toBe(1);
    expect(check.stderr).toContain("unopenable: idempotency_records ten_x//p/k0123 response_sealed");
    expect(check.stdout).toContain("0 values still under a previous data key, 1 under no configured key");

    // One more answer, under the old key: check counts it, rotate re-seals it and still reports the lost one.
    const aad = recordAad("ten_x", "/p", "late");
    await sql(
      a.app.db,
      `insert into idempotency_records (scope, procedure, key, request_digest, response_sealed, created_at)
       values ('ten_x', '/p', 'late', $1, $2, now())`,
      [randomBytes(32), seal(oldKey, Buffer.from("late answer"), aad)],
    );
    const withOld = { ...asNew, LICENSD_DATA_KEY_PREVIOUS: oldKey.toString("hex") };
    const counted = await cli(["--json", "data-key", "check"], withOld);
    expect(counted.code).toBe(1);
    const doc = JSON.parse(counted.stdout) as { tables: { table: string; previous: number }[]; unopenable: unknown[] };
    expect(doc.tables.find((t) => t.table === "idempotency_records")!.previous).toBe(1);
    expect(doc.unopenable).toEqual([{ table: "idempotency_records", id: "ten_x//p/k0123", column: "response_sealed" }]);
    const rotated = await cli(["data-key", "rotate", "--batch-size", "7"], withOld);
    expect(rotated.code).toBe(1);
    expect(rotated.stdout).toMatch(/^idempotency_records\t246\t244\t0\t1\t1$/m);
    expect(rotated.stdout).toContain("re-sealed 1 value under the current data key; 1 open under no configured key");
    const [row] = await query<{ response_sealed: Buffer }>(
      a.databaseUrl,
      "select response_sealed from idempotency_records where key = 'late'",
    );
    expect(open(newKey, row!.response_sealed, aad).toString()).toBe("late answer");
  });

  it("refuses malformed LICENSD_DATA_KEY_PREVIOUS before touching the database", async () => {
    const bad = await cli(["data-key", "check"], { ...asNew, LICENSD_DATA_KEY_PREVIOUS: "nope" });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("LICENSD_DATA_KEY_PREVIOUS: key 1 of 1 must be 32 bytes");
    const same = await cli(["data-key", "rotate"], { ...asNew, LICENSD_DATA_KEY_PREVIOUS: newKey.toString("base64") });
    expect(same.code).toBe(2);
    expect(same.stderr).toContain("LICENSD_DATA_KEY_PREVIOUS: key 1 of 1 is LICENSD_DATA_KEY itself");
  });
});

async function countSealed() {
  return query(
    a.databaseUrl,
    "select (select string_agg(encode(response_sealed, 'hex'), ',' order by key) from idempotency_records) as r",
  );
}
