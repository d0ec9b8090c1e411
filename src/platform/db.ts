import { MikroORM, type EntityManager, type Options, type PostgreSqlConnection } from "@mikro-orm/postgresql";
import { Migrator } from "@mikro-orm/migrations";
import { CompiledQuery, type Transaction } from "kysely";
import type { Logger } from "./logger.js";

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

export interface Database {
  orm: MikroORM;
  /** Runs `fn` in one transaction on a fresh EntityManager; commits when it returns, then runs the hooks `afterCommit` registered on it. */
  tx<T>(fn: (em: EntityManager) => Promise<T>): Promise<T>;
  /** Runs `hook` once the transaction of `em` (one `tx` gave) has committed; never, if it rolls back. */
  afterCommit(em: EntityManager, hook: () => void): void;
  /** A fresh EntityManager for reads outside a transaction. */
  em(): EntityManager;
  /**
   * One statement on its own (in its own transaction, one round trip), with bound
   * parameters as `query` sends them, prepared once per pooled connection under `name`:
   * for a hot statement whose text never changes, PostgreSQL then parses and plans it once.
   */
  prepared<T>(name: string, sql: string, params: unknown[]): Promise<T[]>;
  /** `select 1` with a short timeout: is the database answering? */
  ping(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
}

/** What the database maps, given by the composition root (platform knows no domain): every entity, every migration in order. */
export interface Schema {
  entities: NonNullable<Options["entities"]>;
  migrations: NonNullable<NonNullable<Options["migrations"]>["migrationsList"]>;
}

export async function openDatabase(url: string, opts: { poolMax: number; logger: Logger; schema: Schema }): Promise<Database> {
  const config: Options = {
    clientUrl: url,
    entities: opts.schema.entities,
    extensions: [Migrator],
    // No schema snapshot: migrations are listed by hand, and a server must not write files into its working directory.
    migrations: { migrationsList: opts.schema.migrations, transactional: true, allOrNothing: true, silent: true, snapshot: false },
    pool: { min: 0, max: opts.poolMax, idleTimeoutMillis: 30_000 },
    driverOptions: { connectionTimeoutMillis: 5_000 },
    debug: false,
    logger: (message) => opts.logger.debug({ orm: message }),
    allowGlobalContext: false,
  };
  const orm = await MikroORM.init(config);
  const hooks = new WeakMap<EntityManager, (() => void)[]>();
  const db: Database = {
    orm,
    async tx(fn) {
      let after: (() => void)[] | undefined;
      const result = await orm.em.fork().transactional(async (em) => {
        const r = await fn(em);
        after = hooks.get(em);
        return r;
      });
      // Committed: a hook that fails must not make the caller think the change did not happen.
      for (const hook of after ?? []) {
        try {
          hook();
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
    async prepared<T>(name: string, sql: string, params: unknown[]) {
      const pool = await (orm.em.getConnection() as PostgreSqlConnection).getNativeClient();
      try {
        return (await pool.query({ name, text: sql, values: params })).rows as T[];
      } catch (err) {
        throw orm.em.getDriver().convertException(err as Error);
      }
    },
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
