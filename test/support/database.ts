import { randomBytes } from "node:crypto";
import pg from "pg";

/** The PostgreSQL server tests use; this machine runs one on 127.0.0.1:5432 (trust auth). */
export const TEST_SERVER_URL = process.env.LICENSD_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/** A fresh, empty database on the test server, dropped by `drop()`. Files never share one. */
export async function createTestDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `licensd_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: TEST_SERVER_URL });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(TEST_SERVER_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: TEST_SERVER_URL });
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}

/** Runs one query on a database directly, as an operator with psql would. */
export async function query<T extends pg.QueryResultRow = Record<string, unknown>>(
  url: string,
  sql: string,
  params: unknown[] = [],
) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end();
  }
}
