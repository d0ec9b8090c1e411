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
  // provisioning/payment-source.service.ts: the providers' signing secrets, to the source id
  {
    table: "payment_sources",
    key: ["id"],
    columns: ["secret_sealed", "previous_secret_sealed"],
    aad: ([id]) => id!,
  },
  // provisioning/email-outbox.ts: license keys waiting to be e-mailed (erased once sent), to the e-mail's id
  { table: "email_outbox", key: ["id"], columns: ["key_sealed"], aad: ([id]) => id! },
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
  const tally = (found: Found, key: readonly string[], column: string) => {
    count[found]++;
    if (found === "unopenable") unopenable.push({ table: spec.table, id: key.join("/"), column });
  };
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
    const pending = new Map<string, Reseal[]>(spec.columns.map((c) => [c, []]));
    for (const row of rows) {
      const key = spec.key.map((k) => row[k] as string);
      for (const column of spec.columns) {
        const value = row[column] as Buffer | null;
        if (value === null) continue;
        count.values++;
        const aad = spec.aad(key);
        const opened = keys.unseal(value, aad);
        if (!opened) tally("unopenable", key, column);
        else if (opened.keyIndex === 0) tally("current", key, column);
        else if (!opts.reseal) tally("previous", key, column);
        else {
          pending.get(column)!.push({ key, old: value, sealed: seal(keys, opened.plaintext, aad) });
          opened.plaintext.fill(0);
        }
      }
    }
    for (const [column, items] of pending) {
      if (items.length === 0) continue;
      const written = await resealBatch(db, spec, column, items);
      for (const item of items) {
        if (written.has(item.key.join("\0"))) tally("resealed", item.key, column);
        // Changed by an instance since it was read: read again, and re-seal what is there now.
        else tally(await settle(db, keys, spec, item.key, column), item.key, column);
      }
    }
    if (rows.length < limit) return count;
    after = spec.key.map((k) => rows.at(-1)![k] as string);
  }
}

type Found = "current" | "previous" | "resealed" | "unopenable";
interface Reseal {
  key: string[];
  /** The ciphertext read: the write happens only if the column still holds it. */
  old: Buffer;
  sealed: Buffer;
}

/**
 * Re-seals a batch in one transaction, each row a compare-and-set on the ciphertext read; returns the keys (joined by
 * NUL) of the rows written. The rows are locked first in key order, so two rotations at once never deadlock.
 */
async function resealBatch(db: Database, spec: SealedColumns, column: string, items: Reseal[]): Promise<Set<string>> {
  const n = spec.key.length;
  const batch = `unnest(${[
    ...spec.key.map((_, i) => `$${i + 1}::text[]`),
    `$${n + 1}::bytea[]`,
    `$${n + 2}::bytea[]`,
  ].join(", ")}) as v(${spec.key.map((_, i) => `k${i}`).join(", ")}, old_value, new_value)`;
  const matches = `${spec.key.map((k, i) => `t.${k} = v.k${i}`).join(" and ")} and t.${column} = v.old_value`;
  const params = [
    ...spec.key.map((_, i) => items.map((it) => it.key[i]!)),
    items.map((it) => it.old),
    items.map((it) => it.sealed),
  ];
  const rows = await db.tx(async (em) => {
    await sql(
      em,
      `select 1 from ${spec.table} as t, ${batch} where ${matches}
        order by ${spec.key.map((k) => `t.${k}`).join(", ")} for update of t`,
      params,
    );
    return sql<Record<string, string>>(
      em,
      `update ${spec.table} as t set ${column} = v.new_value from ${batch} where ${matches}
        returning ${spec.key.map((k) => `t.${k}`).join(", ")}`,
      params,
    );
  });
  return new Set(rows.map((r) => spec.key.map((k) => r[k]).join("\0")));
}

/** One value read afresh: which key opens it, after re-sealing it (compare-and-set, read again while it loses). */
async function settle(
  db: Database,
  keys: DataKeyring,
  spec: SealedColumns,
  key: string[],
  column: string,
): Promise<Found> {
  const where = spec.key.map((k, i) => `${k} = $${i + 2}`).join(" and ");
  const aad = spec.aad(key);
  for (let attempt = 1; ; attempt++) {
    const [row] = await sql<Record<string, Buffer | null>>(
      db,
      `select ${column} from ${spec.table} where ${spec.key.map((k, i) => `${k} = $${i + 1}`).join(" and ")}`,
      key,
    );
    // Deleted (an idempotency record purged) or emptied (a secret's overlap ended) meanwhile: nothing left to re-seal.
    const value = row?.[column] ?? null;
    if (value === null) return "current";
    const opened = keys.unseal(value, aad);
    if (!opened) return "unopenable";
    if (opened.keyIndex === 0) return "current";
    const written = await affectedRows(
      db,
      `update ${spec.table} set ${column} = $1 where ${where} and ${column} = $${key.length + 2}`,
      [seal(keys, opened.plaintext, aad), ...key, value],
    );
    opened.plaintext.fill(0);
    if (written === 1) return "resealed";
    if (attempt >= CAS_ATTEMPTS)
      throw new Error(`${spec.table} ${key.join("/")} ${column}: changed under every one of ${attempt} re-seals`);
  }
}
