import pg from "pg";

/** A value that must never be found at rest, and where it came from (shown on a hit). */
export interface Secret {
  name: string;
  value: string | Buffer;
}

/** A place a secret was found: the table, the column and the form it was in. */
export interface SecretHit {
  secret: string;
  form: string;
  table: string;
  column: string;
}

/**
 * Every text form a secret may take once stored: itself, hex (either case), and base64
 * and base64url at the three byte alignments (so it is found inside a longer encoded
 * blob too, with the characters the neighbouring bytes change cut off).
 */
export function secretForms(value: string | Buffer): { form: string; text: string }[] {
  const bytes = Buffer.isBuffer(value) ? value : Buffer.from(value, "utf8");
  const forms: { form: string; text: string }[] = [];
  if (!Buffer.isBuffer(value)) forms.push({ form: "plain", text: value });
  forms.push({ form: "hex", text: bytes.toString("hex") }, { form: "HEX", text: bytes.toString("hex").toUpperCase() });
  for (const encoding of ["base64", "base64url"] as const) {
    for (let shift = 0; shift < 3; shift++) {
      const encoded = Buffer.concat([Buffer.alloc(shift), bytes])
        .toString(encoding)
        .replace(/=+$/, "");
      // Characters that also carry bits of the unknown neighbours are dropped at both ends.
      const start = shift === 0 ? 0 : Math.ceil((shift * 8) / 6);
      const end = Math.floor(((shift + bytes.length) * 8) / 6);
      forms.push({ form: `${encoding}@${shift}`, text: encoded.slice(start, end) });
    }
  }
  return forms;
}

/** Column types that cannot hold a secret: numbers, booleans, times, enums, network addresses, geometry. */
const OPAQUE_TYPE_CATEGORIES = ["N", "B", "D", "T", "E", "I", "G"];

/**
 * Searches every column that can hold text or bytes (text, varchar, bytea, json, jsonb,
 * arrays, …) of every table in the database, found from pg_catalog now, so a table added
 * later is searched too: for each secret in each of its text forms (in the column's text
 * rendering), and in bytea columns for its raw bytes.
 */
export async function findSecretsAtRest(databaseUrl: string, secrets: Secret[]): Promise<SecretHit[]> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows: columns } = await client.query<{ schema: string; table: string; column: string; type: string }>(
      `select n.nspname as schema, c.relname as table, a.attname as column, t.typname as type
         from pg_attribute a
         join pg_class c on c.oid = a.attrelid
         join pg_namespace n on n.oid = c.relnamespace
         join pg_type t on t.oid = a.atttypid
        where c.relkind in ('r', 'p', 'm')
          and a.attnum > 0 and not a.attisdropped
          and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%'
          and t.typcategory <> all ($1::text[])
        order by 1, 2, 3`,
      [OPAQUE_TYPE_CATEGORIES],
    );
    if (columns.length === 0) throw new Error("no columns to search: is this the right database?");
    const texts = secrets.flatMap((s) => secretForms(s.value).map((f) => ({ secret: s.name, ...f })));
    const hits: SecretHit[] = [];
    for (const col of columns) {
      const table = `${pg.escapeIdentifier(col.schema)}.${pg.escapeIdentifier(col.table)}`;
      const column = pg.escapeIdentifier(col.column);
      const found = await client.query<{ n: string }>(
        `select x.n from unnest($1::text[]) with ordinality as x(needle, n)
          where exists (select 1 from ${table} where strpos(${column}::text, x.needle) > 0)`,
        [texts.map((t) => t.text)],
      );
      for (const { n } of found.rows) {
        const t = texts[Number(n) - 1]!;
        hits.push({ secret: t.secret, form: t.form, table: col.table, column: col.column });
      }
      if (col.type === "bytea") {
        const raw = await client.query<{ n: string }>(
          `select x.n from unnest($1::bytea[]) with ordinality as x(needle, n)
            where exists (select 1 from ${table} where position(x.needle in ${column}) > 0)`,
          [secrets.map((s) => (Buffer.isBuffer(s.value) ? s.value : Buffer.from(s.value, "utf8")))],
        );
        for (const { n } of raw.rows)
          hits.push({ secret: secrets[Number(n) - 1]!.name, form: "raw bytes", table: col.table, column: col.column });
      }
    }
    return hits;
  } finally {
    await client.end();
  }
}

/** The secrets found in a text (a log, a file), in any of their text forms. */
export function findSecretsInText(text: string, secrets: Secret[]): { secret: string; form: string }[] {
  return secrets.flatMap((s) =>
    secretForms(s.value)
      .filter((f) => text.includes(f.text))
      .map((f) => ({ secret: s.name, form: f.form })),
  );
}
