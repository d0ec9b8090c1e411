import {
  MikroORM,
  UniqueConstraintViolationException,
  type EntityManager,
  type Options,
  type PostgreSqlConnection,
} from "@mikro-orm/postgresql";
import { Migrator } from "@mikro-orm/migrations";
import { CompiledQuery, type Transaction } from "kysely";
import type pg from "pg";
import type { Logger } from "./logger.js";
import { PostgresTarget } from "./postgres-target.js";

export type { EntityManager };

/**
 * Hand-written SQL: the one way. Entity work goes through the ORM (`em.find`,
 * `em.persist`, …); a statement the ORM does not express well, or a hot path that must not
 * pay for it, goes through `sql` (rows) or `affectedRows` (how many rows a write touched):
 *
 *     const rows = await sql<{ id: string }>(em, "select id from tenants where id = $1", [id]);
 *     const n = await affectedRows(db, "delete from usage_dedupe where received_at < $1", [cutoff]);
 *
 * - Placeholders are `$1`, `$2`, …; parameters are bound (never formatted into the text):
 *   a JavaScript array is one PostgreSQL array (`= any($1)`, `unnest($1::text[])`), a Date a
 *   timestamp, a Buffer bytea, a plain object JSON. Where PostgreSQL cannot infer a
 *   parameter's type (`select $1`, `coalesce($1, …)`), cast it (`$1::timestamptz`).
 * - `on` is an EntityManager or the Database. An EntityManager that `db.tx` gave runs the
 *   statement in its transaction (on the transaction's connection); any other runs it on a
 *   pooled connection, as does the Database.
 * - On the Database, `{ name }` makes it a named prepared statement: each pooled
 *   connection parses and plans it once (hot statements whose text never changes, e.g.
 *   validation, machine stamps, rate limits; BENCHMARKS.md measured the difference). The
 *   name is ignored on an EntityManager, and when the Database was opened with
 *   `namedStatements: false` (a transaction-pooling PgBouncer lends another server
 *   connection each time, which has not prepared it: docs/pgbouncer.md).
 * - Errors are MikroORM's exceptions (e.g. `UniqueConstraintViolationException`).
 *
 * Sessions that must hold one connection (LISTEN, advisory locks) take their own `pg`
 * client, on the direct URL when a pooler sits in front; migrations keep MikroORM's
 * migration API.
 */
export type SqlRunner = Database | EntityManager;

export interface SqlOptions {
  /** A named prepared statement (on the Database, see above); the same name must always carry the same text. */
  name?: string;
}

/**
 * Flushes `em`; a unique-constraint violation (a row another transaction inserted first) becomes `refusal()`, the
 * caller's ALREADY_EXISTS, instead of an INTERNAL error.
 */
export async function flushUnique(em: EntityManager, refusal: () => Error): Promise<void> {
  try {
    await em.flush();
  } catch (err) {
    if (err instanceof UniqueConstraintViolationException) throw refusal();
    throw err;
  }
}

/** Runs `text` with `params` bound to `$1`, `$2`, … and returns its rows (see above). */
export async function sql<T>(
  on: SqlRunner,
  text: string,
  params: readonly unknown[] = [],
  opts?: SqlOptions,
): Promise<T[]> {
  return (await run<T>(on, text, params, opts?.name)).rows;
}

/**
 * A timestamptz column read through sql(): MikroORM's pool keeps timestamps as PostgreSQL's
 * text (`2026-12-06 08:01:07.123456+00`), not Date; this parses that text (ISO 8601 once the
 * space is a `T` and the offset has minutes).
 */
export function timestampOf(value: string | Date): Date;
export function timestampOf(value: string | Date | null): Date | null;
export function timestampOf(value: string | Date | null): Date | null {
  if (value === null || value instanceof Date) return value;
  return new Date(value.replace(" ", "T").replace(/([+-]\d\d)$/, "$1:00"));
}

/** Runs a write (`insert`, `update`, `delete`) and returns how many rows it touched. */
export async function affectedRows(
  on: SqlRunner,
  text: string,
  params: readonly unknown[] = [],
  opts?: SqlOptions,
): Promise<number> {
  return (await run(on, text, params, opts?.name)).count;
}

/** What a statement returned: its rows, and how many rows it touched. */
export interface SqlResult<T> {
  rows: T[];
  count: number;
}

function run<T>(
  on: SqlRunner,
  text: string,
  params: readonly unknown[],
  name: string | undefined,
): Promise<SqlResult<T>> {
  if ("pooled" in on) return on.pooled<T>(text, params, name);
  const trx = on.getTransactionContext<Transaction<unknown>>();
  return trx ? inTransaction<T>(on, trx, text, params) : onPool<T>(on, text, params, undefined);
}

async function inTransaction<T>(
  em: EntityManager,
  trx: Transaction<unknown>,
  text: string,
  params: readonly unknown[],
): Promise<SqlResult<T>> {
  try {
    const res = await trx.executeQuery<T>(CompiledQuery.raw(text, params as unknown[]));
    return { rows: res.rows as T[], count: Number(res.numAffectedRows ?? res.rows.length) };
  } catch (err) {
    throw em.getDriver().convertException(err as Error);
  }
}

async function onPool<T>(
  em: EntityManager,
  text: string,
  params: readonly unknown[],
  name: string | undefined,
): Promise<SqlResult<T>> {
  try {
    const pool = await (em.getConnection() as PostgreSqlConnection).getNativeClient();
    const values = params as unknown[];
    const res = await pool.query(name ? { name, text, values } : { text, values });
    return { rows: res.rows as T[], count: res.rowCount ?? res.rows.length };
  } catch (err) {
    throw em.getDriver().convertException(err as Error);
  }
}

/**
 * Gives the pool back a client whose connection ended while it was checked out. Kysely (0.29) releases a
 * transaction's client only after its COMMIT or ROLLBACK succeeded: when the connection is lost in the middle of a
 * transaction (a failover, pg_terminate_backend), both fail and the client stays checked out for good, shrinking
 * the pool by one each time and making its end() wait forever. Hand-written: no option of Kysely, MikroORM or pg
 * covers it. The release is made idempotent, as the holder may still call it.
 */
function returnLostClients(pool: pg.Pool): void {
  const out = new WeakSet<pg.PoolClient>();
  const watched = new WeakSet<pg.PoolClient>();
  pool.on("acquire", (client) => {
    out.add(client);
    if (watched.has(client)) return;
    watched.add(client);
    client.once("end", () => {
      if (!out.has(client)) return;
      const release = client.release;
      client.release = () => undefined;
      release(new Error("connection ended while checked out"));
    });
  });
  pool.on("release", (_err, client) => out.delete(client as pg.PoolClient));
}

export interface Database {
  orm: MikroORM;
  /**
   * Runs `fn` in one transaction on a fresh EntityManager; commits when it returns, then runs the hooks `afterCommit`
   * registered on it.
   */
  tx<T>(fn: (em: EntityManager) => Promise<T>): Promise<T>;
  /**
   * Runs `hook` once the transaction of `em` (one `tx` gave) has committed, never if it rolls back; `tx` returns
   * after its hooks (a hook's promise is awaited), in the order they were registered.
   */
  afterCommit(em: EntityManager, hook: () => void | Promise<void>): void;
  /** A fresh EntityManager for reads outside a transaction. */
  em(): EntityManager;
  /** One statement on a pooled connection: what `sql(db, …)` and `affectedRows(db, …)` run. */
  pooled<T>(text: string, params: readonly unknown[], name?: string): Promise<SqlResult<T>>;
  /** `select 1` with a short timeout: is the database answering? */
  ping(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * What the database maps, given by the composition root (platform knows no domain): every entity, every migration in
 * order.
 */
export interface Schema {
  entities: NonNullable<Options["entities"]>;
  migrations: NonNullable<NonNullable<Options["migrations"]>["migrationsList"]>;
}

export async function openDatabase(
  url: string,
  opts: {
    poolMax: number;
    logger: Logger;
    schema: Schema;
    /** Whether `{ name }` prepares statements (default true); off behind a transaction-pooling PgBouncer. */
    namedStatements?: boolean;
    /** A query not answered within this many ms is failed by the client (pg's query_timeout); default none. */
    queryTimeoutMs?: number;
  },
): Promise<Database> {
  const named = opts.namedStatements ?? true;
  const target = PostgresTarget.parse(url);
  const config: Options = {
    // A multi-host URL (pg_auto_failover's): MikroORM and pg take one host, and the pool's Client class picks the host.
    clientUrl: target.multiHost ? target.urlFor() : url,
    entities: opts.schema.entities,
    extensions: [Migrator],
    // No schema snapshot: migrations are listed by hand, and a server must not write files into its working directory.
    migrations: {
      migrationsList: opts.schema.migrations,
      transactional: true,
      allOrNothing: true,
      silent: true,
      snapshot: false,
    },
    pool: { min: 0, max: opts.poolMax, idleTimeoutMillis: 30_000 },
    driverOptions: {
      onPoolCreated: returnLostClients,
      connectionTimeoutMillis: 5_000,
      ...(opts.queryTimeoutMs ? { query_timeout: opts.queryTimeoutMs } : {}),
      ...(target.multiHost ? { Client: target.poolClient(), keepAlive: true } : {}),
    },
    debug: false,
    logger: (message) => opts.logger.debug({ orm: message }),
    allowGlobalContext: false,
  };
  const orm = await MikroORM.init(config);
  const hooks = new WeakMap<EntityManager, (() => void | Promise<void>)[]>();
  const db: Database = {
    orm,
    async tx(fn) {
      let after: (() => void | Promise<void>)[] | undefined;
      const result = await orm.em.fork().transactional(async (em) => {
        const r = await fn(em);
        after = hooks.get(em);
        return r;
      });
      // Committed: a hook that fails must not make the caller think the change did not happen.
      for (const hook of after ?? []) {
        try {
          await hook();
        } catch (err) {
          opts.logger.error({ err }, "after-commit hook failed");
        }
      }
      return result;
    },
    afterCommit(em, hook) {
      const registered = hooks.get(em);
      if (registered) registered.push(hook);
      else hooks.set(em, [hook]);
    },
    em: () => orm.em.fork(),
    pooled: <T>(text: string, params: readonly unknown[], name?: string) =>
      onPool<T>(orm.em, text, params, named ? name : undefined),
    async ping(timeoutMs = 2_000) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      });
      const query = sql(db, "select 1")
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
