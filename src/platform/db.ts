import { MikroORM, type EntityManager, type Options } from "@mikro-orm/postgresql";
import { Migrator } from "@mikro-orm/migrations";
import { CompiledQuery, type Transaction } from "kysely";
import pg from "pg";
import { createHash } from "node:crypto";
import type { Logger } from "./logger.js";
import { entities } from "../entities.js";
import { migrationsList } from "../migrations/index.js";

export type { EntityManager };

/**
 * Runs SQL with bound parameters (`$1`, `$2`, … sent separately, arrays as PostgreSQL
 * arrays) on the EntityManager's transaction. MikroORM's `execute` formats parameters
 * into the SQL text and expands arrays; bulk statements (`unnest($1::text[], …)`) need
 * the real bind protocol. Outside a transaction it runs on a pooled connection.
 */
export async function query<T>(em: EntityManager, sql: string, params: unknown[]): Promise<T[]> {
  const ctx = em.getTransactionContext<Transaction<unknown>>();
  const runner = ctx ?? em.getConnection().getClient();
  try {
    const res = await runner.executeQuery<T>(CompiledQuery.raw(sql, params));
    return res.rows as T[];
  } catch (err) {
    throw em.getDriver().convertException(err as Error);
  }
}

/** Marks SQL run often enough to be prepared once per connection (see PreparingClient). */
export const PREPARED = "/* prepared */ ";

/** Statement names by text: the text's digest, so one name never stands for two texts. */
const statementNames = new Map<string, string>();

/**
 * pg's Client, preparing the statements marked with PREPARED once per connection, so
 * PostgreSQL skips parsing them (and, once it settles on a generic plan, planning) on every
 * later run: ingestion sends the same few statements for every batch. Hand-written: kysely,
 * under MikroORM, sends every query unnamed, and node-pg prepares only a query config that
 * carries a name (once per connection).
 */
class PreparingClient extends pg.Client {
  // pg's query() has a dozen overloads; this only looks at (text, values) and passes the rest on.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  override query(config: any, values?: any, callback?: any): any {
    if (typeof config === "string" && config.startsWith(PREPARED) && Array.isArray(values)) {
      let name = statementNames.get(config);
      if (name === undefined) {
        name = `licensd_${createHash("sha256").update(config).digest("base64url").slice(0, 40)}`;
        if (statementNames.size < 1000) statementNames.set(config, name);
      }
      return super.query({ name, text: config, values }, callback);
    }
    return super.query(config, values, callback);
  }
}

export interface Database {
  orm: MikroORM;
  /** Runs `fn` in one transaction on a fresh EntityManager; commits when it returns. */
  tx<T>(fn: (em: EntityManager) => Promise<T>): Promise<T>;
  /** A fresh EntityManager for reads outside a transaction. */
  em(): EntityManager;
  /** `select 1` with a short timeout: is the database answering? */
  ping(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
}

export async function openDatabase(url: string, opts: { poolMax: number; preparedStatements?: boolean; logger: Logger }): Promise<Database> {
  const config: Options = {
    clientUrl: url,
    entities,
    extensions: [Migrator],
    // No schema snapshot: migrations are listed by hand, and a server must not write files into its working directory.
    migrations: { migrationsList, transactional: true, allOrNothing: true, silent: true, snapshot: false },
    pool: { min: 0, max: opts.poolMax, idleTimeoutMillis: 30_000 },
    driverOptions: { connectionTimeoutMillis: 5_000, ...(opts.preparedStatements === false ? {} : { Client: PreparingClient }) },
    debug: false,
    logger: (message) => opts.logger.debug({ orm: message }),
    allowGlobalContext: false,
  };
  const orm = await MikroORM.init(config);
  const db: Database = {
    orm,
    tx: (fn) => orm.em.fork().transactional((em) => fn(em)),
    em: () => orm.em.fork(),
    async ping(timeoutMs = 2_000) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      });
      const query = orm.em
        .fork()
        .execute("select 1")
        .then(() => true)
        .catch(() => false);
      try {
        return await Promise.race([query, timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
    close: () => orm.close(true),
  };
  return db;
}
