import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UniqueConstraintViolationException } from "@mikro-orm/core";
import { affectedRows, openDatabase, sql, type Database } from "../../src/platform/db.js";
import { schema } from "../../src/entities.js";
import { createLogger } from "../../src/platform/logger.js";
import { createTestDatabase } from "../support/database.js";

let pgdb: Awaited<ReturnType<typeof createTestDatabase>>;
let db: Database;

beforeAll(async () => {
  pgdb = await createTestDatabase();
  // One pooled connection: a named statement is then visible in that session's pg_prepared_statements.
  db = await openDatabase(pgdb.url, { poolMax: 1, logger: createLogger("silent"), schema });
  await sql(db, "create table notes (id text primary key, body text not null, tags text[] not null default '{}')");
});

afterAll(async () => {
  await db?.close();
  await pgdb?.drop();
});

describe("sql() and affectedRows(): hand-written SQL", () => {
  it("runs in the transaction of the EntityManager db.tx gives: its writes are seen there, and undone by a rollback", async () => {
    await db.tx(async (em) => {
      await sql(em, "insert into notes (id, body) values ($1, $2)", ["n1", "kept"]);
      expect(await sql<{ body: string }>(em, "select body from notes where id = $1", ["n1"])).toEqual([
        { body: "kept" },
      ]);
    });
    await expect(
      db.tx(async (em) => {
        await sql(em, "insert into notes (id, body) values ($1, $2)", ["n2", "rolled back"]);
        expect(await sql(em, "select 1 from notes where id = $1", ["n2"])).toHaveLength(1);
        throw new Error("abort");
      }),
    ).rejects.toThrow("abort");
    expect(await sql<{ id: string }>(db, "select id from notes order by id")).toEqual([{ id: "n1" }]);
  });

  it("binds parameters (never formats them into the text): arrays are PostgreSQL arrays, text stays text", async () => {
    const tricky = "it's $1 and ? and '); drop table notes; --";
    await sql(db, "insert into notes (id, body, tags) values ($1, $2, $3)", ["n3", tricky, ["a", "b"]]);
    const [row] = await sql<{ body: string; tags: string[] }>(db, "select body, tags from notes where id = any($1)", [
      ["n3", "nope"],
    ]);
    expect(row).toEqual({ body: tricky, tags: ["a", "b"] });
  });

  it("affectedRows counts the rows a write touched, in a transaction and on the pool", async () => {
    await sql(db, "insert into notes (id, body) select 'm' || g, 'x' from generate_series(1, 5) g");
    expect(await db.tx((em) => affectedRows(em, "update notes set body = $1 where id like $2", ["y", "m%"]))).toBe(5);
    expect(await affectedRows(db, "delete from notes where id like $1 and body = $2", ["m%", "y"])).toBe(5);
    expect(await affectedRows(db, "delete from notes where id = $1", ["absent"])).toBe(0);
  });

  it("{ name } prepares the statement once per pooled connection", async () => {
    const text = "select body from notes where id = $1";
    expect(await sql(db, text, ["n1"], { name: "test-note-by-id" })).toEqual([{ body: "kept" }]);
    expect(await sql(db, text, ["n3"], { name: "test-note-by-id" })).toHaveLength(1);
    const prepared = await sql<{ name: string }>(db, "select name from pg_prepared_statements where name = $1", [
      "test-note-by-id",
    ]);
    expect(prepared).toEqual([{ name: "test-note-by-id" }]);
  });

  it("with namedStatements: false (a transaction-pooling PgBouncer), { name } prepares nothing", async () => {
    const unnamed = await openDatabase(pgdb.url, {
      poolMax: 1,
      logger: createLogger("silent"),
      schema,
      namedStatements: false,
    });
    try {
      const text = "select body from notes where id = $1";
      expect(await sql(unnamed, text, ["n1"], { name: "test-unnamed-note" })).toEqual([{ body: "kept" }]);
      expect(await sql(unnamed, "select name from pg_prepared_statements")).toEqual([]);
    } finally {
      await unnamed.close();
    }
  });

  it("throws MikroORM's exceptions, in a transaction and on the pool", async () => {
    await expect(sql(db, "insert into notes (id, body) values ($1, $2)", ["n1", "again"])).rejects.toBeInstanceOf(
      UniqueConstraintViolationException,
    );
    await expect(
      db.tx((em) => sql(em, "insert into notes (id, body) values ($1, $2)", ["n1", "again"])),
    ).rejects.toBeInstanceOf(UniqueConstraintViolationException);
  });
});
