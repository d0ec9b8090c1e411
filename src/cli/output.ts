/*
 * How results are shown: with --json one JSON document on stdout (protobuf JSON, every field
 * present); on a terminal a table with colours (NO_COLOR honoured); piped, plain lines that cut
 * and awk can read (tab-separated rows under a header, `field: value` for one resource).
 */
import { type DescField, type DescMessage, type MessageShape, toJson } from "@bufbuild/protobuf";
import Table from "cli-table3";
import pc from "picocolors";
import type { Context } from "./runtime.js";
import { shortEnumName } from "./parse.js";

export interface Column<T> {
  header: string;
  value: (item: T) => string;
  /** Colour the value by what it says (active, suspended, revoked, …) on a terminal. */
  status?: boolean;
}

const GOOD = new Set(["active", "valid", "ok", "serving", "true", "resolved", "verified", "enabled", "succeeded"]);
const WARN = new Set([
  "suspended",
  "expired",
  "retiring",
  "inactive",
  "warning",
  "medium",
  "unresolved",
  "disabled",
  "pending",
]);
const BAD = new Set([
  "revoked",
  "dead",
  "invalid",
  "fail",
  "not-serving",
  "false",
  "high",
  "critical",
  "retired",
  "failed",
]);

export function paint(ctx: Context, text: string): string {
  if (!ctx.colour) return text;
  const key = text.toLowerCase();
  if (GOOD.has(key)) return pc.green(text);
  if (WARN.has(key)) return pc.yellow(text);
  if (BAD.has(key) || /^[A-Z_]+$/.test(text)) return pc.red(text);
  return text;
}

export const bold = (ctx: Context, text: string) => (ctx.colour ? pc.bold(text) : text);
export const dim = (ctx: Context, text: string) => (ctx.colour ? pc.dim(text) : text);

/** Prints one JSON document. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A message as protobuf JSON with every field present (scripts need `valid: false`, not a missing key). */
export const messageJson = <D extends DescMessage>(schema: D, msg: MessageShape<D>) =>
  toJson(schema, msg, { alwaysEmitImplicit: true });

export function printTable<T>(ctx: Context, columns: Column<T>[], items: T[]): void {
  const rows = items.map((item) => columns.map((c) => c.value(item)));
  if (ctx.tty) {
    const table = new Table({
      head: columns.map((c) => bold(ctx, c.header)),
      style: { head: [], border: ctx.colour ? ["grey"] : [] },
    });
    for (const row of rows) table.push(row.map((v, i) => (columns[i].status ? paint(ctx, v) : v)));
    process.stdout.write(`${table.toString()}\n`);
    if (items.length === 0) process.stdout.write(`${dim(ctx, "(none)")}\n`);
    return;
  }
  const clean = (v: string) => v.replace(/[\t\n]/g, " ");
  process.stdout.write(`${[columns.map((c) => c.header), ...rows].map((r) => r.map(clean).join("\t")).join("\n")}\n`);
}

/** One resource's fields as text, in the schema's order; unset fields left out. */
export function fieldsOf<D extends DescMessage>(schema: D, msg: MessageShape<D>): [string, string][] {
  const json = toJson(schema, msg) as Record<string, unknown>;
  const out: [string, string][] = [];
  for (const field of schema.fields) {
    const v = json[field.jsonName];
    if (v === undefined) continue;
    out.push([field.name, fieldText(field, v)]);
  }
  return out;
}

function fieldText(field: DescField, v: unknown): string {
  if (field.fieldKind === "enum" && typeof v === "string") return shortEnumName(field.enum, v);
  if (field.fieldKind === "message" && field.message.typeName === "google.protobuf.Duration" && typeof v === "string")
    return humanDuration(v);
  if (field.fieldKind === "list" && field.listKind === "enum" && Array.isArray(v))
    return v.map((x) => shortEnumName(field.enum, String(x))).join(", ");
  if (field.fieldKind === "list" && field.listKind === "scalar" && Array.isArray(v)) return v.join(", ");
  // A list of messages (features, entitlements): each item's values joined by ":", e.g. `seats:limit:sum`.
  if (field.fieldKind === "list" && field.listKind === "message" && Array.isArray(v))
    return v.map((item: Record<string, unknown>) => compact(field.message, item)).join(", ");
  if (field.fieldKind === "map" && field.mapKind === "scalar")
    return Object.entries(v as Record<string, unknown>)
      .map(([k, x]) => `${k}=${x}`)
      .join(", ");
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** Protobuf JSON's `31536000s` as `1y` (whole units only; anything else as it was). */
function humanDuration(v: string): string {
  const m = /^(\d+)s$/.exec(v);
  if (!m) return v;
  const s = Number(m[1]);
  for (const [unit, n] of [
    ["y", 31_536_000],
    ["d", 86_400],
    ["h", 3600],
    ["m", 60],
  ] as const)
    if (s >= n && s % n === 0) return `${s / n}${unit}`;
  return v;
}

function compact(schema: DescMessage, item: Record<string, unknown>): string {
  return schema.fields
    .filter((f) => item[f.jsonName] !== undefined)
    .map((f) => fieldText(f, item[f.jsonName]))
    .join(":");
}

/** Prints `field: value` rows (a two-column table on a terminal). */
export function printRecord(ctx: Context, rows: [string, string][]): void {
  if (ctx.tty) {
    const table = new Table({ style: { head: [], border: ctx.colour ? ["grey"] : [] } });
    for (const [k, v] of rows)
      table.push({ [bold(ctx, k)]: k === "status" || k === "valid" || k === "code" ? paint(ctx, v) : v });
    process.stdout.write(`${table.toString()}\n`);
    return;
  }
  process.stdout.write(`${rows.map(([k, v]) => `${k}: ${v}`).join("\n")}\n`);
}

/** A message: --json prints the whole response; else its resource's fields and any `extra` rows (a secret). */
export function printMessage<D extends DescMessage, R extends DescMessage>(
  ctx: Context,
  response: { schema: D; message: MessageShape<D> },
  resource?: { schema: R; message: MessageShape<R> | undefined },
  extra: [string, string][] = [],
): void {
  if (ctx.json) {
    printJson(messageJson(response.schema, response.message));
    return;
  }
  const rows =
    resource?.message !== undefined
      ? fieldsOf(resource.schema, resource.message)
      : fieldsOf(response.schema, response.message);
  printRecord(ctx, [...rows, ...extra]);
}

/** Writes a note for the person at the terminal (stderr: never mixed into piped output). */
export function note(ctx: Context, text: string): void {
  if (!ctx.json) process.stderr.write(`${ctx.colour ? pc.dim(text) : text}\n`);
}
