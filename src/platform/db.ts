import { MikroORM, type EntityManager, type Options } from "@mikro-orm/postgresql";
import { Migrator } from "@mikro-orm/migrations";
import type { Logger } from "./logger.js";
import { entities } from "../entities.js";
import { migrationsList } from "../migrations/index.js";

export type { EntityManager };

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

export async function openDatabase(url: string, opts: { poolMax: number; logger: Logger }): Promise<Database> {
  const config: Options = {
    clientUrl: url,
    entities,
    extensions: [Migrator],
    // No schema snapshot: migrations are listed by hand, and a server must not write files into its working directory.
    migrations: { migrationsList, transactional: true, allOrNothing: true, silent: true, snapshot: false },
    pool: { min: 0, max: opts.poolMax, idleTimeoutMillis: 30_000 },
    driverOptions: { connectionTimeoutMillis: 5_000 },
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
