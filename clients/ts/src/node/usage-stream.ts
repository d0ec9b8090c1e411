/*
 * Batches over StreamUsage, with acknowledgements and resends: the part of UsageUploader that
 * any batch source can reuse (the CLI's `usage send` feeds it JSONL).
 *
 * The server acknowledges each batch after its transaction committed and deduplicates events
 * by idempotency key, so a batch is kept until its ack arrives and, when the stream breaks,
 * every unacknowledged batch is sent again on a new stream (same events, same keys) after a
 * capped, jittered backoff. Errors that a retry cannot fix end it.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type CallOptions, type Client } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import type { UsageEventSchema } from "../../gen/licensd/usage/v1/usage_pb.js";
import type { StreamUsageResponse, UsageService } from "../../gen/licensd/usage/v1/usage_service_pb.js";
import { sleep } from "../backoff.js";

/**
 * A fresh idempotency key for a usage event: a UUIDv7, time-ordered, so consecutive keys land side by side in the
 * server's deduplication index (a B-tree) rather than all over it.
 */
export function newEventKey(): string {
  return uuidv7();
}

/** One batch: 1 to 1,000 events, each with an idempotency key; `batchId` names it in its ack. */
export interface UsageBatch {
  batchId: string;
  events: MessageInitShape<typeof UsageEventSchema>[];
}

export interface Backoff {
  /** First delay after a failure. Default 250 ms. */
  initialMs?: number;
  /** Largest delay. Default 30 s. */
  maxMs?: number;
}

export interface StreamBatchesOptions<B extends UsageBatch> {
  client: Client<typeof UsageService>;
  /** Pulled only while fewer than `window` batches await their acks; the stream ends after it ends. */
  batches: AsyncIterable<B>;
  /** Called for each ack, in order; the batch is forgotten when it returns. */
  onAck(batch: B, ack: StreamUsageResponse): void | Promise<void>;
  /** Called as a batch goes on the wire; `resend` when it goes again on a new stream. */
  onSend?(batch: B, resend: boolean): void;
  /** Called before each retry, with the error that ended the stream. */
  onRetry?(error: UsageStreamError, delayMs: number): void;
  /** Batches on the wire before their acks (the server reads 12 ahead). Default 8. */
  window?: number;
  backoff?: Backoff;
  /** Headers (an API key) and the like for every stream. */
  callOptions?: CallOptions;
  signal?: AbortSignal;
}

/**
 * A StreamUsage failure: the Connect code, the ErrorInfo reason when the server sent one, and whether retrying can
 * help (`permanent`: bad credentials, a request the server refuses as such).
 */
export class UsageStreamError extends Error {
  readonly code: Code;
  readonly reason: string | undefined;
  readonly permanent: boolean;
  constructor(override readonly cause: ConnectError) {
    super(cause.message);
    this.name = "UsageStreamError";
    this.code = cause.code;
    this.reason = cause.findDetails(ErrorInfoSchema)[0]?.reason;
    this.permanent = PERMANENT.has(cause.code);
  }
}

// Codes that say the same request will fail again. The rest (UNAVAILABLE, INTERNAL, RESOURCE_EXHAUSTED, a reset
// connection's UNKNOWN, …) are worth retrying.
const PERMANENT = new Set([
  Code.InvalidArgument,
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.NotFound,
  Code.FailedPrecondition,
  Code.OutOfRange,
  Code.Unimplemented,
]);

/**
 * A random delay from half the initial one up to the capped exponential one: agents cut off together do not all come
 * back together.
 */
export function backoffDelay(attempt: number, b: Backoff = {}): number {
  const initial = b.initialMs ?? 250;
  const cap = Math.min(b.maxMs ?? 30_000, initial * 2 ** Math.min(attempt, 30));
  return Math.round(initial / 2 + Math.random() * (cap - initial / 2));
}

/**
 * Streams `batches` over StreamUsage until the source ends and every batch is acknowledged. A broken stream is
 * reopened after a backoff (reset by each ack), unacknowledged batches first. Rejects with a UsageStreamError that is
 * `permanent`, or with the signal's reason when aborted.
 */
export async function streamBatches<B extends UsageBatch>(opts: StreamBatchesOptions<B>): Promise<void> {
  const window = Math.max(1, opts.window ?? 8);
  const source = opts.batches[Symbol.asyncIterator]();
  const outstanding: B[] = [];
  let sourceDone = false;
  // One pull of the source at a time, shared: a stream that died while waiting on it must not swallow a batch.
  let pulling: Promise<IteratorResult<B>> | undefined;
  let generation = 0;
  let attempt = 0;
  let room: (() => void) | undefined;
  const signal = opts.signal;

  const openStream = async () => {
    const mine = ++generation;
    const resend = [...outstanding];
    const requests = async function* () {
      for (const b of resend) {
        opts.onSend?.(b, true);
        yield b;
      }
      while (!sourceDone) {
        while (outstanding.length >= window) {
          await new Promise<void>((resolve) => (room = resolve));
          if (mine !== generation) return;
        }
        pulling ??= source.next();
        const r = await pulling;
        if (mine !== generation) return;
        pulling = undefined;
        if (r.done) {
          sourceDone = true;
          return;
        }
        outstanding.push(r.value);
        opts.onSend?.(r.value, false);
        yield r.value;
      }
    };
    try {
      for await (const ack of opts.client.streamUsage(requests(), { ...opts.callOptions, signal })) {
        const i = outstanding.findIndex((b) => b.batchId === ack.batchId);
        if (i < 0) continue;
        const [batch] = outstanding.splice(i, 1);
        attempt = 0;
        await opts.onAck(batch!, ack);
        room?.();
      }
    } finally {
      // Wakes a request generator parked on the window, so it sees it is stale and ends.
      generation++;
      room?.();
    }
    if (outstanding.length > 0 || !sourceDone)
      throw new ConnectError("the stream ended with batches unacknowledged", Code.Unavailable);
  };

  for (;;) {
    if (sourceDone && outstanding.length === 0) return;
    try {
      await openStream();
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      const error = new UsageStreamError(ConnectError.from(err));
      if (error.permanent) throw error;
      const delay = backoffDelay(attempt++, opts.backoff);
      opts.onRetry?.(error, delay);
      await sleep(delay, signal);
      if (signal?.aborted) throw signal.reason;
    }
  }
}
