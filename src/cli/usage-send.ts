/*
 * `licensd usage send [FILE]`: JSON-lines usage events through StreamUsage, in batches that
 * the server acknowledges after commit.
 *
 * Resuming: every event needs an idempotency key; one without gets `cli.<seed>.<line>`, the
 * seed being random per input and kept in a state file (FILE.licensd-state by default; for
 * stdin only with --state). The state file also records how many lines were acknowledged and
 * the SHA-256 of those lines. A re-run skips that acknowledged prefix (after checking it did
 * not change) and sends the rest with the same keys, so a batch that committed just before a
 * crash, but whose ack was lost, is a duplicate the server counts once.
 *
 * Within one run, a broken stream (a dropped connection, a restarting server) is reopened by
 * streamBatches from @licensd/client/node after a capped, jittered backoff, and the batches not yet
 * acknowledged go again with the same keys; the state file only ever moves over acknowledged batches.
 * Errors a retry cannot fix end the run at once; retrying ends after --max-retry-time without an ack.
 */
import { createHash, type Hash, randomBytes } from "node:crypto";
import {
  closeSync,
  createReadStream,
  existsSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  writeSync,
} from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { UsageService } from "@licensd/client";
import { streamBatches, UsageStreamError } from "@licensd/client/node";
import { type UsageEvent, UsageEventSchema } from "@licensd/client/gen/licensd/usage/v1/usage_pb.js";
import cliProgress from "cli-progress";
import { type Command, InvalidArgumentError, Option } from "commander";
import { act } from "./command.js";
import { printJson, printRecord } from "./output.js";
import { parseSeconds } from "./parse.js";
import { CliFailure, type Context, describeFailure, EXIT } from "./runtime.js";

interface SendState {
  v: 1;
  /** Makes the derived idempotency keys of this input unique to it. */
  seed: string;
  /** Lines (counting blank ones) acknowledged by the server, from the start of the input. */
  ackedLines: number;
  /** SHA-256 (hex) of those lines, each with its "\n": a changed prefix is refused, not half-resent. */
  ackedHash: string;
}

interface Batch {
  batchId: string;
  events: UsageEvent[];
  /** The input line of each event, for reporting rejections. */
  lines: number[];
  /** The last input line this batch covers, and the hash of everything up to it. */
  endLine: number;
  endHash: string;
}

interface Totals {
  sent: number;
  accepted: number;
  duplicates: number;
  rejected: { line: number; reason: string; message: string }[];
  skipped: number;
  /** Streams reopened after a transient error. */
  reconnects: number;
}

const parseBatchSize = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 1000) throw new InvalidArgumentError("a whole number from 1 to 1000");
  return n;
};

/** How many batches may await their acknowledgement: the server reads at most 12 ahead. */
const WINDOW = 8;

/** How long a run keeps retrying a broken stream without any acknowledgement, unless --max-retry-time says. */
const DEFAULT_MAX_RETRY = "5m";

export function usageSendCommand(usage: Command): void {
  usage
    .command("send")
    .description(
      "send usage events, one JSON object per line (UsageEvent fields: license_id or license_key, metric, quantity, " +
        "time, agent_id, attributes, idempotency_key), from FILE or stdin, through StreamUsage. A re-run of the " +
        "same file resends only what was not acknowledged (see --state).",
    )
    .argument("[file]", "JSON lines; - or nothing for stdin")
    .addOption(new Option("--batch-size <n>", "events per batch (1-1000)").argParser(parseBatchSize).default(500))
    .option("--state <file>", "where progress is kept (default FILE.licensd-state; stdin: none unless given)")
    .option("--no-state", "keep no progress: a re-run resends everything with new keys")
    .option("--fresh", "ignore an existing state file: send the input as new events")
    .addOption(
      new Option(
        "--max-retry-time <d>",
        "after a dropped connection or a transient server error, keep reconnecting and resending for this long " +
          "without an acknowledgement before giving up (90s, 15m, …; 0: no retries)",
      )
        .argParser(parseSeconds)
        .default(parseSeconds(DEFAULT_MAX_RETRY), DEFAULT_MAX_RETRY),
    )
    .action(
      act<{ batchSize: number; state?: string | false; fresh?: boolean; maxRetryTime: bigint }>(
        async (ctx, o, [file]) => {
          const stdin = file === undefined || file === "-";
          if (!stdin && !existsSync(file)) throw new CliFailure(`${file}: no such file`, EXIT.usage);
          const statePath =
            o.state === false ? undefined : (o.state ?? (stdin ? undefined : `${path.resolve(file)}.licensd-state`));
          return sendUsage(ctx, {
            file: stdin ? undefined : file,
            statePath,
            batchSize: o.batchSize,
            fresh: o.fresh,
            maxRetryMs: Number(o.maxRetryTime) * 1000,
          });
        },
      ),
    );
}

function readState(statePath: string | undefined, fresh: boolean | undefined): SendState {
  if (statePath && !fresh && existsSync(statePath)) {
    try {
      const s = JSON.parse(readFileSync(statePath, "utf8")) as SendState;
      if (s.v === 1 && /^[0-9a-f]{16,64}$/.test(s.seed) && Number.isInteger(s.ackedLines)) return s;
    } catch {
      // Fall through to the error below.
    }
    throw new CliFailure(`${statePath}: not a usage send state file`, EXIT.usage, "remove it, or pass --fresh");
  }
  return { v: 1, seed: randomBytes(8).toString("hex"), ackedLines: 0, ackedHash: createHash("sha256").digest("hex") };
}

/** Replaces the state file atomically and durably: a crash leaves the old or the new one, never half. */
function writeState(statePath: string, state: SendState): void {
  const tmp = `${statePath}.tmp`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    writeSync(fd, JSON.stringify(state));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, statePath);
}

async function countLines(file: string): Promise<number> {
  let n = 0;
  for await (const _ of createInterface({ input: createReadStream(file), crlfDelay: Number.POSITIVE_INFINITY })) n++;
  return n;
}

async function sendUsage(
  ctx: Context,
  opts: { file?: string; statePath?: string; batchSize: number; fresh?: boolean; maxRetryMs: number },
): Promise<number> {
  const state = readState(opts.statePath, opts.fresh);
  if (opts.statePath) writeState(opts.statePath, state);
  const totals: Totals = { sent: 0, accepted: 0, duplicates: 0, rejected: [], skipped: 0, reconnects: 0 };
  const started = Date.now();
  const total = opts.file ? await countLines(opts.file) : undefined;
  const bar = process.stderr.isTTY && !ctx.json ? progressBar(total) : undefined;
  let acked = 0;
  const tick = () =>
    bar?.update(state.ackedLines, { rate: Math.round(acked / Math.max((Date.now() - started) / 1000, 0.001)) });

  // Opened when the stream asks for its first batch: readline drops lines emitted before anyone iterates.
  const input = () =>
    createInterface({
      input: opts.file ? createReadStream(opts.file) : process.stdin,
      crlfDelay: Number.POSITIVE_INFINITY,
    });
  const batches = readBatches(input, state, opts.batchSize, totals);
  // A problem with the input (a changed prefix) ends the source cleanly (what was sent is still
  // acknowledged and recorded) and is reported as itself, not as a stream error to retry.
  let inputError: unknown;
  async function* source(): AsyncGenerator<Batch> {
    try {
      yield* batches;
    } catch (err) {
      inputError = err;
    }
  }
  // The batches sent and not yet written to the state file, in input order. The state file moves
  // only over a run of acknowledged batches from the front, so it never claims a line whose batch
  // might still be unacknowledged (acks come in order, but the bookkeeping does not rely on it).
  const unrecorded: { batch: Batch; done: boolean }[] = [];
  const record = () => {
    let moved = false;
    while (unrecorded[0]?.done) {
      const { batch } = unrecorded.shift()!;
      state.ackedLines = batch.endLine;
      state.ackedHash = batch.endHash;
      moved = true;
    }
    if (moved && opts.statePath) writeState(opts.statePath, state);
  };

  // Retrying stops once it has gone on for maxRetryMs since the last acknowledgement (or the start).
  const giveUp = new AbortController();
  let failingSince: number | undefined;
  try {
    await streamBatches<Batch>({
      client: ctx.streamClient(UsageService),
      batches: source(),
      window: WINDOW,
      signal: giveUp.signal,
      onSend(batch, resend) {
        if (resend) return;
        totals.sent += batch.events.length;
        unrecorded.push({ batch, done: false });
      },
      onAck(batch, ack) {
        failingSince = undefined;
        totals.accepted += ack.accepted;
        totals.duplicates += ack.duplicates;
        for (const r of ack.rejected)
          totals.rejected.push({ line: batch.lines[r.index] ?? -1, reason: r.reason, message: r.message });
        acked += batch.events.length;
        const entry = unrecorded.find((u) => u.batch === batch);
        if (entry) entry.done = true;
        try {
          record();
        } catch (err) {
          // The state file cannot be written: no reason to retry the stream.
          giveUp.abort(err);
          throw err;
        }
        tick();
      },
      onRetry(error, delayMs) {
        const now = Date.now();
        failingSince ??= now;
        const left = failingSince + opts.maxRetryMs - now;
        if (delayMs >= left) {
          // Wakes the backoff sleep when the time is up; streamBatches then rejects with this error.
          setTimeout(() => giveUp.abort(error), Math.max(0, left));
          return;
        }
        totals.reconnects++;
        const f = describeFailure(error.cause, ctx.url);
        process.stderr.write(
          `${bar ? "\n" : ""}warning: stream broken (${f.message}); ` +
            `resending unacknowledged batches in ${(delayMs / 1000).toFixed(1)}s\n`,
        );
      },
    });
    if (inputError) throw inputError;
    // Lines after the last batch (blank or unreadable ones) are done too.
    const rest = batches.tail();
    if (rest && rest.endLine > state.ackedLines) {
      state.ackedLines = rest.endLine;
      state.ackedHash = rest.endHash;
      if (opts.statePath) writeState(opts.statePath, state);
    }
  } catch (err) {
    if (inputError) throw inputError;
    if (!(err instanceof UsageStreamError)) throw err;
    if (err.permanent) throw err.cause;
    // Out of retry time: reported as the last error (a server that cannot be reached: exit 3).
    const f = describeFailure(err.cause, ctx.url);
    if (f.exitCode !== EXIT.unreachable) throw err.cause;
    throw new CliFailure(
      `${f.message} (gave up after retrying for ${opts.maxRetryMs / 1000}s; ${state.ackedLines} lines acknowledged)`,
      EXIT.unreachable,
      opts.statePath ? `${f.hint}; a re-run resumes after the acknowledged lines` : f.hint,
    );
  } finally {
    bar?.stop();
  }

  const seconds = (Date.now() - started) / 1000;
  const summary = {
    sent: totals.sent,
    accepted: totals.accepted,
    duplicates: totals.duplicates,
    rejected: totals.rejected.length,
    skipped: totals.skipped,
    reconnects: totals.reconnects,
    lines: state.ackedLines,
    eventsPerSecond: Math.round(totals.sent / Math.max(seconds, 0.001)),
    state: opts.statePath ?? null,
    rejections: totals.rejected,
  };
  if (ctx.json) printJson(summary);
  else {
    const { rejections, ...rows } = summary;
    printRecord(
      ctx,
      Object.entries(rows).map(([k, v]) => [k, String(v ?? "none")]),
    );
    for (const r of rejections) process.stderr.write(`line ${r.line}: ${r.reason}: ${r.message}\n`);
  }
  return totals.rejected.length > 0 ? EXIT.server : EXIT.ok;
}

/**
 * The input's events in batches, after the acknowledged prefix (whose hash must match). Lines that are not a
 * UsageEvent are rejected here, with their line number, and not sent.
 */
function readBatches(
  input: () => AsyncIterable<string>,
  state: SendState,
  batchSize: number,
  totals: Totals,
): AsyncIterable<Batch> & { tail(): { endLine: number; endHash: string } | undefined } {
  const hash: Hash = createHash("sha256");
  let tail: { endLine: number; endHash: string } | undefined;
  const iterable = (async function* () {
    let lineNo = 0;
    let current: Batch | undefined;
    let n = 0;
    for await (const line of input()) {
      lineNo++;
      hash.update(`${line}\n`);
      if (lineNo <= state.ackedLines) {
        if (line.trim() !== "") totals.skipped++;
        if (lineNo === state.ackedLines && hash.copy().digest("hex") !== state.ackedHash)
          throw new CliFailure(
            `the input's first ${lineNo} lines changed since they were sent`,
            EXIT.usage,
            "pass --fresh to send it as new events, or restore the original",
          );
        continue;
      }
      if (line.trim() === "") {
        tail = { endLine: lineNo, endHash: hash.copy().digest("hex") };
        continue;
      }
      let event: UsageEvent;
      try {
        event = fromJson(UsageEventSchema, JSON.parse(line) as JsonValue);
      } catch (err) {
        totals.rejected.push({ line: lineNo, reason: "UNREADABLE", message: (err as Error).message });
        tail = { endLine: lineNo, endHash: hash.copy().digest("hex") };
        continue;
      }
      if (!event.idempotencyKey) event.idempotencyKey = `cli.${state.seed}.${lineNo}`;
      current ??= { batchId: `b${++n}.${lineNo}`, events: [], lines: [], endLine: 0, endHash: "" };
      current.events.push(event);
      current.lines.push(lineNo);
      if (current.events.length >= batchSize) {
        current.endLine = lineNo;
        current.endHash = hash.copy().digest("hex");
        yield current;
        current = undefined;
      }
      tail = { endLine: lineNo, endHash: hash.copy().digest("hex") };
    }
    if (lineNo < state.ackedLines)
      throw new CliFailure(
        `the input has ${lineNo} lines, fewer than the ${state.ackedLines} already sent`,
        EXIT.usage,
        "pass --fresh to send it as new events",
      );
    if (current) {
      current.endLine = lineNo;
      current.endHash = hash.copy().digest("hex");
      yield current;
    }
  })();
  return Object.assign(iterable, { tail: () => tail });
}

function progressBar(total: number | undefined) {
  const bar = new cliProgress.SingleBar(
    {
      format:
        total === undefined
          ? "sending | {value} lines | {rate} events/s"
          : "sending [{bar}] {percentage}% | {value}/{total} lines | {rate} events/s | eta {eta_formatted}",
      hideCursor: true,
      stream: process.stderr,
      noTTYOutput: false,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total ?? 0, 0, { rate: 0 });
  return bar;
}
