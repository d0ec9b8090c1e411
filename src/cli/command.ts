/*
 * The glue between commander and a command's body: the context built from the global options,
 * list paging, the update mask from the flags given, and formatting of common field types.
 */
import { randomUUID } from "node:crypto";
import {
  create,
  type DescEnum,
  type DescMessage,
  fromJson,
  type JsonValue,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { type Duration, durationMs, type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { type Command, Option } from "commander";
import { type Column, messageJson, printJson, printTable } from "./output.js";
import { shortEnumName, parseCount } from "./parse.js";
import { type Context, createContext, globals, UsageError } from "./runtime.js";

/**
 * Wraps a command body for commander: `fn(ctx, opts, args)`; a number it returns is the exit code.
 * Errors propagate to main.ts, which prints them once.
 */
export function act<O>(fn: (ctx: Context, opts: O, args: string[]) => unknown) {
  return async (...params: unknown[]) => {
    const cmd = params[params.length - 1] as Command;
    const args = params.slice(0, -2) as string[];
    const ctx = createContext(globals(cmd));
    const code = await fn(ctx, cmd.opts() as O, args);
    if (typeof code === "number") process.exitCode = code;
  };
}

export interface ListOptions {
  limit: number;
  pageToken?: string;
}

/** Adds --limit and --page-token to a list command. */
export function listOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("--limit <n>", "at most n items, fetched page by page; 0 for all").argParser(parseCount).default(100),
    )
    .option("--page-token <token>", "continue from a previous list's nextPageToken");
}

export interface Page<T> {
  items: T[];
  next: string;
}

/** Pages through a list RPC until `limit` items (0: all) or the last page. */
export async function collectPages<T>(
  opts: ListOptions,
  fetch: (pageSize: number, pageToken: string) => Promise<Page<T>>,
): Promise<Page<T>> {
  const items: T[] = [];
  let token = opts.pageToken ?? "";
  for (;;) {
    const want = opts.limit === 0 ? 1000 : Math.min(1000, opts.limit - items.length);
    const page = await fetch(want, token);
    items.push(...page.items.slice(0, opts.limit === 0 ? undefined : opts.limit - items.length));
    token = page.next;
    if (!token || (opts.limit !== 0 && items.length >= opts.limit)) return { items, next: token };
  }
}

/** Prints a list: `{"<key>": [...], "nextPageToken": "…"}` with --json, else a table. */
export function printList<D extends DescMessage>(
  ctx: Context,
  key: string,
  schema: D,
  page: Page<MessageShape<D>>,
  columns: Column<MessageShape<D>>[],
): void {
  if (ctx.json) {
    printJson({ [key]: page.items.map((m) => messageJson(schema, m)), nextPageToken: page.next });
    return;
  }
  printTable(ctx, columns, page.items);
  if (page.next && !ctx.json) process.stderr.write(`more: --page-token ${page.next} (or --limit 0 for all)\n`);
}

/** The update mask: the proto names of the fields whose flags were given. */
export function updateMask(opts: Record<string, unknown>, fields: Record<string, string>): { paths: string[] } {
  const paths = Object.entries(fields)
    .filter(([flag]) => opts[flag] !== undefined)
    .map(([, path]) => path);
  return { paths };
}

export const time = (t: Timestamp | undefined) => (t ? timestampDate(t).toISOString().replace(".000Z", "Z") : "");
export const duration = (d: Duration | undefined) => (d ? humanSeconds(durationMs(d) / 1000) : "");
export const enumText = (desc: DescEnum, value: number) => {
  const v = desc.values.find((x) => x.number === value);
  return v && value !== 0 ? shortEnumName(desc, v.name) : "";
};

function humanSeconds(s: number): string {
  for (const [unit, n] of [
    ["y", 31_536_000],
    ["d", 86_400],
    ["h", 3600],
    ["m", 60],
  ] as const)
    if (s >= n && s % n === 0) return `${s / n}${unit}`;
  return `${s}s`;
}

/** An idempotency key for a mutation: --idempotency-key, else a fresh one, so a retried call changes nothing twice. */
export const idempotencyKey = (opts: { idempotencyKey?: string }) => opts.idempotencyKey ?? `cli-${randomUUID()}`;

export function mutationOptions(cmd: Command): Command {
  return cmd.option(
    "--idempotency-key <key>",
    "reuse a key to make a retried command a no-op (the server answers with the first result)",
  );
}

/**
 * A request from `--body` (protobuf JSON, for fields without a flag) with the flags' values on top.
 * The body's top-level fields count for the update mask too.
 */
export function withBody<D extends DescMessage>(
  schema: D,
  body: Record<string, unknown> | undefined,
  init: MessageInitShape<D>,
): { message: MessageShape<D>; bodyPaths: string[] } {
  let message: MessageShape<D>;
  try {
    message = body ? fromJson(schema, body as JsonValue) : create(schema);
  } catch (err) {
    throw new UsageError(`--body: ${(err as Error).message}`);
  }
  const flags = create(schema, init) as Record<string, unknown>;
  for (const field of schema.fields) {
    const v = (init as Record<string, unknown>)[field.localName];
    if (v !== undefined) (message as Record<string, unknown>)[field.localName] = flags[field.localName];
  }
  const bodyPaths = body ? schema.fields.filter((f) => f.jsonName in body || f.name in body).map((f) => f.name) : [];
  return { message, bodyPaths };
}
