/*
 * What every command shares: the global options (--url, --api-key, --tenant, --json), the
 * clients over the API, and one way of failing (a message, the ErrorInfo reason, a hint and an
 * exit code that says whose fault it was). No command opens the database except serve and migrate.
 */
import { existsSync } from "node:fs";
import path from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { BadRequestSchema, ErrorInfoSchema } from "@licensd/client/gen/google/rpc/error_details_pb.js";
import { type Command, CommanderError, InvalidArgumentError } from "commander";
import { loadDevSecrets } from "../platform/dev-secrets.js";
import packageJson from "../../package.json" with { type: "json" };

/** Exit codes, documented in docs/cli.md: scripts tell a typo from a refusal from an outage. */
export const EXIT = {
  ok: 0,
  /** The server refused the request (its ErrorInfo reason is printed). */
  server: 1,
  /** The command line was wrong: an unknown flag, a bad value, a missing argument or file. */
  usage: 2,
  /** The server could not be reached (connection refused, DNS, TLS, timeout, shutting down). */
  unreachable: 3,
  /**
   * The request succeeded and the answer is "no": a signature or proof that fails, an invalid license, a webhook
   * attempt (`webhook test`, `redeliver`) that got no 2xx.
   */
  negative: 4,
} as const;

/** A mistake on the command line, found by the command itself (commander finds the rest). */
export class UsageError extends Error {}

/** A failure with its own exit code and hint, e.g. a file that cannot be read. */
export class CliFailure extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
    readonly hint?: string,
  ) {
    super(message);
  }
}

export interface GlobalOptions {
  url?: string;
  apiKey?: string;
  key?: string;
  tenant?: string;
  json?: boolean;
  timeout?: number;
}

export interface Context {
  url: string;
  tenant: string;
  json: boolean;
  /** Whether stdout is a terminal: tables and colours then, plain lines when piped. */
  tty: boolean;
  colour: boolean;
  /** A client over Connect (HTTP/1.1): unary calls and server streams. */
  client<T extends DescService>(service: T): Client<T>;
  /** A client over gRPC (HTTP/2): client and bidirectional streams (ImportLicenses, StreamUsage). */
  streamClient<T extends DescService>(service: T): Client<T>;
}

export const DEFAULT_URL = "http://127.0.0.1:8080";

/**
 * The API key: --api-key, LICENSD_API_KEY, else the super-admin key (LICENSD_SUPER_ADMIN_KEY or the development
 * secrets file), so `npm start` then `licensd tenant create` works on a development machine with nothing set.
 */
function apiKey(opts: GlobalOptions): string | undefined {
  const given = opts.apiKey ?? opts.key ?? process.env.LICENSD_API_KEY ?? process.env.LICENSD_SUPER_ADMIN_KEY;
  if (given) return given;
  const dataDir = path.resolve(process.env.LICENSD_DATA_DIR ?? ".licensd");
  if (existsSync(path.join(dataDir, "secrets.json"))) return loadDevSecrets(dataDir).superAdminKey;
  return undefined;
}

export function createContext(opts: GlobalOptions): Context {
  const url = (opts.url ?? process.env.LICENSD_URL ?? DEFAULT_URL).replace(/\/+$/, "");
  try {
    const u = new URL(url);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error();
  } catch {
    throw new UsageError(`--url: not an http(s) URL: ${JSON.stringify(url)}`);
  }
  const key = apiKey(opts);
  const interceptors: Interceptor[] = [
    (next) => (req) => {
      if (key) req.header.set("authorization", `Bearer ${key}`);
      req.header.set("user-agent", `licensd-cli/${packageJson.version}`);
      return next(req);
    },
  ];
  const timeoutMs = (opts.timeout ?? 30) * 1000;
  const unary = createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors, defaultTimeoutMs: timeoutMs });
  const streams = createGrpcTransport({ baseUrl: url, interceptors });
  const tty = process.stdout.isTTY === true && !opts.json;
  return {
    url,
    tenant: opts.tenant ?? process.env.LICENSD_TENANT ?? "",
    json: opts.json === true,
    tty,
    colour: tty && !process.env.NO_COLOR && process.env.TERM !== "dumb",
    client: (service) => createClient(service, unary),
    streamClient: (service) => createClient(service, streams),
  };
}

/** The global options as commander parsed them, wherever on the line they were given. */
export const globals = (cmd: Command): GlobalOptions => cmd.optsWithGlobals() as GlobalOptions;

/** A Connect code as it is written on the wire: NotFound → not_found. */
const codeName = (code: Code) => Code[code].replace(/[A-Z]/g, (c, i: number) => (i > 0 ? "_" : "") + c.toLowerCase());

/** Node's codes for a server that is not there, found anywhere down an error's causes. */
const NETWORK =
  /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ECONNRESET|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|EPROTO|CERT_|ERR_TLS)/;

function networkCause(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; e && depth < 6; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && NETWORK.test(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

export interface Failure {
  exitCode: number;
  message: string;
  reason?: string;
  code?: string;
  metadata?: Record<string, string>;
  fields: { field: string; description: string }[];
  hint?: string;
}

const HINTS: Partial<Record<Code, string>> = {
  [Code.Unauthenticated]: "give an API key: --api-key or LICENSD_API_KEY",
  [Code.PermissionDenied]:
    "this needs a key with another scope (admin for changes, read for reads) or the super-admin key",
  [Code.NotFound]: "check the id; another tenant's ids are not found either (--tenant or LICENSD_TENANT)",
  [Code.InvalidArgument]: "fix the value named above; `licensd <command> --help` lists the flags",
  [Code.AlreadyExists]: "it exists already; `list` or `show` it instead",
  [Code.FailedPrecondition]: "the resource's current state does not allow this; `show` it to see that state",
  [Code.ResourceExhausted]: "rate limited or over a limit; wait and retry",
};

/** What to tell the user about `err`; never a stack trace for something they can fix. */
export function describeFailure(err: unknown, url?: string): Failure {
  if (err instanceof UsageError || err instanceof InvalidArgumentError)
    return {
      exitCode: EXIT.usage,
      message: err.message,
      fields: [],
      hint: "`licensd <command> --help` lists the flags",
    };
  if (err instanceof CliFailure) return { exitCode: err.exitCode, message: err.message, fields: [], hint: err.hint };
  if (err instanceof ConnectError) {
    const net = networkCause(err);
    const info = err.findDetails(ErrorInfoSchema)[0];
    const bad = err.findDetails(BadRequestSchema)[0];
    const unreachable =
      net !== undefined ||
      err.code === Code.DeadlineExceeded ||
      (err.code === Code.Unavailable && info === undefined) ||
      (err.code === Code.Unknown && /fetch failed|socket|connect/i.test(err.rawMessage) && info === undefined);
    if (unreachable)
      return {
        exitCode: EXIT.unreachable,
        message: `cannot reach licensd at ${url ?? "the server"}: ${net ?? err.rawMessage}`,
        code: codeName(err.code),
        fields: [],
        hint:
          err.code === Code.DeadlineExceeded
            ? "the server did not answer in time; raise --timeout or check its health (licensd health)"
            : "is the server running? set --url or LICENSD_URL",
      };
    return {
      exitCode: EXIT.server,
      message: err.rawMessage,
      reason: info?.reason,
      code: codeName(err.code),
      metadata: info && Object.keys(info.metadata).length > 0 ? info.metadata : undefined,
      fields: (bad?.fieldViolations ?? []).map((v) => ({ field: v.field, description: v.description })),
      hint: HINTS[err.code],
    };
  }
  const net = networkCause(err);
  if (net)
    return {
      exitCode: EXIT.unreachable,
      message: `cannot reach licensd at ${url ?? "the server"}: ${net}`,
      fields: [],
      hint: "is the server running? set --url or LICENSD_URL",
    };
  const fsCode = (err as { code?: unknown }).code;
  if (typeof fsCode === "string" && /^E(NOENT|ACCES|ISDIR|NOTDIR|PERM|EXIST)$/.test(fsCode))
    return { exitCode: EXIT.usage, message: (err as Error).message, fields: [] };
  // A bug of ours: the message and where it happened, once, so it can be reported.
  return {
    exitCode: 70,
    message: `internal error: ${(err as Error)?.message ?? String(err)}`,
    fields: [],
    hint: "this is a bug in the licensd CLI; please report it with the command you ran",
  };
}

/** Prints a failure (stderr; with --json also one JSON document on stdout) and sets the exit code. */
export function reportFailure(err: unknown, opts: { json: boolean; url?: string }): number {
  if (err instanceof CommanderError) {
    // commander already printed its message (it names the flag); help and --version end here too.
    if (err.exitCode === 0 || err.code === "commander.helpDisplayed" || err.code === "commander.version") return 0;
    // A command group without its subcommand: its help was printed instead.
    if (err.code === "commander.help") return EXIT.usage;
    process.stderr.write("hint: `licensd <command> --help` lists the flags\n");
    if (opts.json) {
      const error = { message: err.message.replace(/^error: /, ""), code: "usage", exitCode: EXIT.usage };
      process.stdout.write(`${JSON.stringify({ error })}\n`);
    }
    return EXIT.usage;
  }
  const f = describeFailure(err, opts.url);
  const lines = [`error: ${f.message}`];
  if (f.reason) lines.push(`reason: ${f.reason}`);
  for (const v of f.fields)
    if (f.message !== `${v.field}: ${v.description}`) lines.push(`field: ${v.field}: ${v.description}`);
  if (f.metadata && f.fields.length === 0)
    for (const [k, v] of Object.entries(f.metadata)) if (k !== "rule") lines.push(`${k}: ${v}`);
  if (f.hint) lines.push(`hint: ${f.hint}`);
  process.stderr.write(`${lines.join("\n")}\n`);
  if (opts.json) {
    const doc = {
      error: {
        message: f.message,
        code: f.code,
        reason: f.reason,
        metadata: f.metadata,
        fieldViolations: f.fields.length > 0 ? f.fields : undefined,
        exitCode: f.exitCode,
      },
    };
    process.stdout.write(`${JSON.stringify(doc)}\n`);
  }
  return f.exitCode;
}
