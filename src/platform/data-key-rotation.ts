import type { DataKeyring } from "./crypto.js";
import { seal } from "./crypto.js";
import { materialAad } from "./data-key-material.js";
import { affectedRows, type Database, sql } from "./db.js";
import { recordAad } from "./idempotency.js";

/** A table whose columns hold values sealed under the data key (`seal` in platform/crypto.ts). */
export interface SealedColumns {
  table: string;
  /** The primary key's columns (text), in order: batches are read in that order, and a value is named by them. */
  key: readonly string[];
  /** The sealed bytea columns; a null is no value. */
  columns: readonly string[];
  /** The associated data the row's values are sealed with, from its key columns. */
  aad(key: readonly string[]): string;
}

/**
 * Every sealed column licensd has, with the associated data each is sealed with (where it is sealed: the comment).
 * test/integration/data-key-rotation.test.ts fails when a migration adds a `*sealed*` bytea column missing here.
 */
export const SEALED_COLUMNS: readonly SealedColumns[] = [
  // platform/data-key-material.ts
  { table: "data_key_material", key: ["name"], columns: ["sealed"], aad: ([name]) => materialAad(name!) },
  // platform/signing-keys.ts: the Ed25519 private keys, to their kid
  { table: "signing_keys", key: ["kid"], columns: ["private_key_sealed"], aad: ([kid]) => kid! },
  // licensing/license.service.ts: license keys, for re-delivery, to the license id
  { table: "licenses", key: ["id"], columns: ["key_sealed"], aad: ([id]) => id! },
  // webhooks/endpoint.service.ts: signing secrets, to the endpoint id
  {
    table: "webhook_endpoints",
    key: ["id"],
    columns: ["secret_sealed", "previous_secret_sealed"],
    aad: ([id]) => id!,
  },
  // platform/idempotency.ts: recorded answers, to their row
  {
    table: "idempotency_records",
    key: ["scope", "procedure", "key"],
    columns: ["response_sealed"],
    aad: ([scope, procedure, key]) => recordAad(scope!, procedure!, key!),
  },
];

/** What a sweep found in one table: values by the key that opens them. */
export interface SealedTableCount {
  table: string;
  /** Sealed values seen (nulls aside). */
  values: number;
  /** Under LICENSD_DATA_KEY (after this sweep: those it re-sealed are counted in `resealed`, not here). */
  current: number;
  /** Still under a LICENSD_DATA_KEY_PREVIOUS key (a `check`), or found so and re-sealed by someone else meanwhile. */
  previous: number;
  /** Re-sealed under LICENSD_DATA_KEY by this sweep. */
  resealed: number;
  /** Opened by no configured key. */
  unopenable: number;
}

/** A value no configured key opens: named by table, row (its key columns joined by `/`) and column. */
export interface UnopenableValue {
  table: string;
  id: string;
  column: string;
}

export interface SealedValuesReport {
  tables: SealedTableCount[];
  unopenable: UnopenableValue[];
}

export interface SweepOptions {
  /** Re-seal values found under a previous key (`licensd data-key rotate`); false only counts (`check`). */
  reseal: boolean;
  /** Rows read per statement. */
  batchSize?: number;
  /** Called as each table is done, for progress. */
  onTable?: (count: SealedTableCount) => void;
}

/** How many times a value that keeps changing under the sweep is read again before the sweep gives up. */
const CAS_ATTEMPTS = 5;

/**
 * Visits every sealed value, in batches by primary key, and counts it by the key that opens it; with `reseal`, one
 * under a previous key is sealed anew under the current key. Each write is a compare-and-set on the ciphertext read,
 * so a value a serving instance changed meanwhile is never overwritten with the stale one: it is read again. A run
 * keeps nothing between runs: stopped halfway, the next one finds what the first one re-sealed already current.
 */
export async function sweepSealedValues(
  db: Database,
  keys: DataKeyring,
  opts: SweepOptions,
  tables: readonly SealedColumns[] = SEALED_COLUMNS,
): Promise<SealedValuesReport> {
  const report: SealedValuesReport = { tables: [], unopenable: [] };
  for (const spec of tables) {
    const count = await sweepTable(db, keys, spec, opts, report.unopenable);
    report.tables.push(count);
    opts.onTable?.(count);
  }
  return report;
}

async function sweepTable(
  db: Database,
  keys: DataKeyring,
  spec: SealedColumns,
  opts: SweepOptions,
  unopenable: UnopenableValue[],
): Promise<SealedTableCount> {
  const count: SealedTableCount = { table: spec.table, values: 0, current: 0, previous: 0, resealed: 0, unopenable: 0 };
  const keyList = spec.key.join(", ");
  const keyParams = spec.key.map((_, i) => `$${i + 1}`).join(", ");
  const limit = opts.batchSize ?? 500;
  let after: string[] | undefined;
  for (;;) {
    const rows = await sql<Record<string, string | Buffer | null>>(
      db,
      `select ${keyList}, ${spec.columns.join(", ")} from ${spec.table}
        ${after ? `where (${keyList}) > (${keyParams})` : ""} order by ${keyList} limit ${limit}`,
      after ?? [],
    );
    for (const row of rows) {
      const key = spec.key.map((k) => row[k] as string);
      for (const column of spec.columns) {
        const value = row[column] as Buffer | null;
        if (value === null) continue;
        count.values++;
        const found = await settle(db, keys, spec, key, column, value, opts.reseal);
        count[found]++;
        if (found === "unopenable") unopenable.push({ table: spec.table, id: key.join("/"), column });
      }
    }
    if (rows.length < limit) return count;
    after = spec.key.map((k) => rows.at(-1)![k] as string);
  }
}

/** One value: which key opens it, after re-sealing it when asked (compare-and-set, read again when it lost). */
async function settle(
  db: Database,
  keys: DataKeyring,
  spec: SealedColumns,
  key: string[],
  column: string,
  sealed: Buffer,
  reseal: boolean,
): Promise<"current" | "previous" | "resealed" | "unopenable"> {
  const where = spec.key.map((k, i) => `${k} = $${i + 2}`).join(" and ");
  const aad = spec.aad(key);
  let value: Buffer | null = sealed;
  for (let attempt = 1; ; attempt++) {
    if (value === null) return "current"; // emptied meanwhile (a secret's overlap ended): nothing left under any key
    const opened = keys.unseal(value, aad);
    if (!opened) return "unopenable";
    if (opened.keyIndex === 0) return "current";
    if (!reseal) return "previous";
    const written = await affectedRows(
      db,
      `update ${spec.table} set ${column} = $1 where ${where} and ${column} = $${key.length + 2}`,
      [seal(keys, opened.plaintext, aad), ...key, value],
    );
    opened.plaintext.fill(0);
    if (written === 1) return "resealed";
    if (attempt >= CAS_ATTEMPTS)
      throw new Error(`${spec.table} ${key.join("/")} ${column}: changed under every one of ${attempt} re-seals`);
    const [row] = await sql<Record<string, Buffer | null>>(
      db,
      `select ${column} from ${spec.table} where ${spec.key.map((k, i) => `${k} = $${i + 1}`).join(" and ")}`,
      key,
    );
    if (!row) return "current"; // deleted meanwhile (an idempotency record purged)
    value = row[column] ?? null;
  }
}
