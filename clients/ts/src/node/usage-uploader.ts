/*
 * UsageUploader: durable usage metering for agents. `record` writes the event to an on-disk
 * spool (spool.ts) and fsyncs before it resolves; a background loop streams the spool in
 * batches over StreamUsage (usage-stream.ts), settles what the server acknowledged or refused,
 * and resends the rest, with the same idempotency keys, after a dropped connection, a restart
 * or a crash. The server counts each key once, so every recorded event is counted exactly once.
 */
import { randomUUID } from "node:crypto";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { UsageService, type StreamUsageResponse } from "../../gen/licensd/usage/v1/usage_service_pb.js";
import { UsageSpool, type SpoolEntry, type SpooledEvent } from "./spool.js";
import {
  backoffDelay,
  newEventKey,
  streamBatches,
  UsageStreamError,
  type Backoff,
  type UsageBatch,
} from "./usage-stream.js";

export interface UsageUploaderOptions {
  /** The spool directory: one per agent process (a second process on it is refused with SpoolLockedError). */
  dir: string;
  /** An HTTP/2 transport (StreamUsage is bidirectional): `createGrpcTransport` or `createConnectTransport` with
   * `httpVersion: "2"`. Or pass `client`. */
  transport?: Transport;
  client?: Client<typeof UsageService>;
  /** The license, by key (agents). One of licenseKey, lease, licenseId, or a licenseId on every record. */
  licenseKey?: string;
  /** The license, by the agent's current lease token: read as each batch is sent, so a renewed lease is used. */
  lease?: string | (() => string | undefined | Promise<string | undefined>);
  /** The license, by id: needs `apiKey` with the `ingest` scope. */
  licenseId?: string;
  /** Sent as `authorization: Bearer …` on every stream. */
  apiKey?: string;
  /** The agent id for events that do not give one. */
  agentId?: string;
  /** Disk the spool may use; past it `record` throws SpoolFullError. Default 64 MiB. */
  maxSpoolBytes?: number;
  /** Segment file size. Default 1 MiB (at most a quarter of maxSpoolBytes). */
  segmentBytes?: number;
  /** Events per batch, 1 to 1,000. Default 500. */
  batchSize?: number;
  /** How long a batch that is not full waits for more events (not when flushing). Default 100 ms. */
  batchDelayMs?: number;
  /** Batches on the wire awaiting acks. Default 8. */
  window?: number;
  /** A stream with nothing to send is closed after this long, and opened again on the next event. Default 5 s. */
  idleMs?: number;
  backoff?: Backoff;
  /** Events the server refused (UNKNOWN_METRIC, LICENSE_REVOKED, LIMIT_EXCEEDED, …): removed from the spool. */
  onRejected?(events: RejectedUsageEvent[]): void;
  /** Every failed stream. With `error.permanent` (bad API key, …) the uploader has stopped sending. */
  onError?(error: UsageStreamError): void;
  /** After each acknowledged batch. */
  onProgress?(stats: UsageUploaderStats): void;
}

export interface RecordOptions {
  /** Overrides the uploader's agentId. */
  agentId?: string;
  /** Names the license by id (with an ingest API key), for uploaders that meter several licenses. */
  licenseId?: string;
  /** When it happened; default now. The server takes events up to 7 days old. */
  time?: Date;
}

/** An event the server refused, with its reason; it was removed from the spool and will not be sent again. */
export interface RejectedUsageEvent {
  idempotencyKey: string;
  metric: string;
  quantity: number;
  time: Date;
  attributes: Record<string, string>;
  agentId: string | undefined;
  licenseId: string | undefined;
  reason: string;
  message: string;
}

export interface UsageUploaderStats {
  /** Recorded, on disk, not yet acknowledged or refused. */
  pending: number;
  /** Events put on the wire, resends included. */
  sent: number;
  /** Events the server acknowledged: counted, or duplicates of ones it counted before. */
  acked: number;
  /** Of `acked`, resends of events it already had. */
  duplicates: number;
  /** Events the server refused (see onRejected). */
  rejected: number;
  /** `record` calls refused because the spool was full. */
  refused: number;
  /** Spool lines skipped on recovery (torn or corrupt). */
  corrupt: number;
  spoolBytes: number;
  /** The last stream failure. */
  lastError: UsageStreamError | undefined;
  /** Set when a permanent error stopped sending; the events stay in the spool for a restart. */
  halted: boolean;
}

/** A `record` argument the server would refuse: nothing is written. */
export class InvalidUsageEventError extends Error {
  readonly code = "INVALID_EVENT";
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = "InvalidUsageEventError";
  }
}

/** `record` or `flush` after `close`. */
export class UsageUploaderClosedError extends Error {
  readonly code = "CLOSED";
  constructor() {
    super("the usage uploader is closed");
    this.name = "UsageUploaderClosedError";
  }
}

interface SpoolBatch extends UsageBatch {
  entries: SpoolEntry[];
}

type Credential = { licenseKey: string } | { lease: string } | { licenseId: string };

function toProto(entries: SpoolEntry[], credential: Credential): UsageBatch["events"] {
  return entries.map(({ event: e }) => ({
    metric: e.metric,
    quantity: BigInt(e.quantity),
    time: timestampFromMs(e.time),
    idempotencyKey: e.key,
    agentId: e.agentId ?? "",
    attributes: e.attributes ?? {},
    ...(e.licenseId ? { licenseId: e.licenseId } : credential),
  }));
}

const METRIC = /^[a-z][a-z0-9_.-]{0,62}$/;
const MAX_QUANTITY = Number.MAX_SAFE_INTEGER;

export class UsageUploader {
  private readonly opts: UsageUploaderOptions;
  private readonly client: Client<typeof UsageService>;
  private readonly batchSize: number;
  private readonly opening: Promise<UsageSpool>;
  private spool: UsageSpool | undefined;
  private readonly loop: Promise<void>;
  private readonly abort = new AbortController();
  private closing = false;
  private closed: Promise<void> | undefined;
  private halted: UsageStreamError | undefined;
  private readonly session = randomUUID().slice(0, 8);
  private batchSeq = 0;
  private readonly counters = { sent: 0, acked: 0, duplicates: 0, rejected: 0, refused: 0 };
  private lastError: UsageStreamError | undefined;
  private readonly flushes: { target: number; resolve(): void; reject(err: unknown): void }[] = [];
  private readonly recording = new Set<Promise<unknown>>();
  private readonly wakers = new Set<() => void>();

  /** Opens the spool (recovering what a previous run left) and starts sending in the background. */
  constructor(opts: UsageUploaderOptions) {
    this.opts = opts;
    this.batchSize = opts.batchSize ?? 500;
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1 || this.batchSize > 1000)
      throw new RangeError("batchSize: 1 to 1000 (StreamUsage's limit per batch)");
    const client = opts.client ?? (opts.transport && createClient(UsageService, opts.transport));
    if (!client) throw new TypeError("UsageUploader needs a transport or a client");
    this.client = client;
    this.opening = UsageSpool.open(opts.dir, { maxBytes: opts.maxSpoolBytes, segmentBytes: opts.segmentBytes });
    this.loop = this.run().catch(() => undefined);
  }

  /** Resolves once the spool is open (rejects with SpoolLockedError and the like). */
  async ready(): Promise<void> {
    await this.opening;
  }

  /**
   * Appends one event to the spool and resolves with its idempotency key once it is on disk (fsync'd): from then on
   * it is delivered, through crashes and restarts, and counted once. Throws InvalidUsageEventError for an event the
   * server would refuse as such, SpoolFullError when the spool is at maxSpoolBytes.
   */
  async record(
    metric: string,
    quantity: number | bigint,
    attributes: Record<string, string> = {},
    options: RecordOptions = {},
  ): Promise<string> {
    if (this.closing) throw new UsageUploaderClosedError();
    const event = this.eventOf(metric, quantity, attributes, options);
    const spool = await this.opening;
    const appended = spool.append([event]);
    this.recording.add(appended);
    try {
      await appended;
    } catch (err) {
      if ((err as { code?: string }).code === "SPOOL_FULL") this.counters.refused++;
      throw err;
    } finally {
      this.recording.delete(appended);
    }
    return event.key;
  }

  private eventOf(
    metric: string,
    quantity: number | bigint,
    attributes: Record<string, string>,
    options: RecordOptions,
  ): SpooledEvent {
    if (!METRIC.test(metric))
      throw new InvalidUsageEventError("metric", "1 to 63 of [a-z0-9_.-], starting with a letter");
    const q = typeof quantity === "bigint" ? Number(quantity) : quantity;
    if (!Number.isSafeInteger(q) || q < 0 || (typeof quantity === "bigint" && BigInt(q) !== quantity))
      throw new InvalidUsageEventError("quantity", `an integer from 0 to ${MAX_QUANTITY}`);
    const entries = Object.entries(attributes);
    if (entries.length > 16) throw new InvalidUsageEventError("attributes", "at most 16");
    for (const [k, v] of entries) {
      if (
        typeof v !== "string" ||
        k.length === 0 ||
        k.length > 63 ||
        v.length > 256 ||
        k.includes("\0") ||
        v.includes("\0")
      )
        throw new InvalidUsageEventError(`attributes.${k}`, "keys 1 to 63 characters, string values up to 256, no NUL");
    }
    const agentId = options.agentId ?? this.opts.agentId;
    if (agentId !== undefined && (agentId.length > 128 || agentId.includes("\0")))
      throw new InvalidUsageEventError("agent_id", "at most 128 characters, no NUL");
    const licenseId = options.licenseId;
    if (licenseId !== undefined && !/^lic_[0-9a-z]{26}$/.test(licenseId))
      throw new InvalidUsageEventError("license_id", "a license id (lic_…)");
    if (!licenseId && !this.opts.licenseKey && !this.opts.lease && !this.opts.licenseId)
      throw new InvalidUsageEventError(
        "license",
        "give the uploader a licenseKey, lease or licenseId, or the record one",
      );
    const time = options.time?.getTime() ?? Date.now();
    if (!Number.isFinite(time)) throw new InvalidUsageEventError("time", "not a valid date");
    return {
      key: newEventKey(),
      metric,
      quantity: q,
      time,
      ...(entries.length > 0 ? { attributes: { ...attributes } } : {}),
      ...(agentId ? { agentId } : {}),
      ...(licenseId ? { licenseId } : {}),
    };
  }

  /**
   * Resolves when every event recorded before the call is acknowledged (or refused, see onRejected); sends at once
   * rather than waiting to fill a batch. Rejects when a permanent error stopped sending, or on close.
   */
  async flush(): Promise<void> {
    if (this.closing) throw new UsageUploaderClosedError();
    const spool = await this.opening;
    await Promise.allSettled([...this.recording]);
    if (this.halted) throw this.halted;
    const target = spool.appended();
    if (spool.settledBefore() >= target) return;
    await new Promise<void>((resolve, reject) => {
      this.flushes.push({ target, resolve, reject });
      this.wake();
    });
  }

  /**
   * Stops sending and closes the spool. What is not acknowledged yet stays on disk and is sent by the next uploader
   * on the same directory; call flush() first to deliver it now.
   */
  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  private async shutdown() {
    this.closing = true;
    this.abort.abort(new UsageUploaderClosedError());
    this.wake();
    await this.loop;
    for (const f of this.flushes.splice(0)) f.reject(new UsageUploaderClosedError());
    const spool = await this.opening.catch(() => undefined);
    await spool?.close();
  }

  stats(): UsageUploaderStats {
    const counts = this.spool?.counts() ?? { pending: 0, bytes: 0, corrupt: 0 };
    return {
      pending: counts.pending,
      ...this.counters,
      corrupt: counts.corrupt,
      spoolBytes: counts.bytes,
      lastError: this.lastError,
      halted: this.halted !== undefined,
    };
  }

  private async run() {
    const spool = await this.opening;
    this.spool = spool;
    const callOptions = this.opts.apiKey ? { headers: { authorization: `Bearer ${this.opts.apiKey}` } } : undefined;
    while (!this.closing) {
      if (!spool.hasUnsent()) {
        await this.pause(undefined, spool);
        continue;
      }
      try {
        await streamBatches<SpoolBatch>({
          client: this.client,
          batches: this.batches(spool),
          onAck: (batch, ack) => this.acknowledged(spool, batch, ack),
          onSend: (batch) => (this.counters.sent += batch.events.length),
          onRetry: (error) => this.failed(error),
          window: this.opts.window,
          backoff: this.opts.backoff,
          callOptions,
          signal: this.abort.signal,
        });
      } catch (err) {
        if (this.closing) break;
        const error = err instanceof UsageStreamError ? err : new UsageStreamError(ConnectError.from(err));
        this.failed(error);
        if (error.permanent) {
          this.halted = error;
          for (const f of this.flushes.splice(0)) f.reject(error);
          return;
        }
        await this.pause(backoffDelay(0, this.opts.backoff));
      }
    }
  }

  private failed(error: UsageStreamError) {
    this.lastError = error;
    this.opts.onError?.(error);
  }

  /**
   * Resolves on flush() or close(), after `ms` when given (then with true), or on the next append to `spool` when
   * given; leaves no timer or listener behind.
   */
  private pause(ms?: number, spool?: UsageSpool): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (timedOut: boolean) => {
        clearTimeout(timer);
        this.wakers.delete(woken);
        unwatch?.();
        resolve(timedOut);
      };
      const woken = () => done(false);
      const timer = ms === undefined ? undefined : setTimeout(() => done(true), ms);
      const unwatch = spool?.watch(woken);
      this.wakers.add(woken);
    });
  }

  private wake() {
    for (const w of [...this.wakers]) w();
  }

  /** The spool's events as batches; ends after idleMs with nothing to send, so an idle agent holds no stream. */
  private async *batches(spool: UsageSpool): AsyncGenerator<SpoolBatch> {
    const idleMs = this.opts.idleMs ?? 5000;
    const delayMs = this.opts.batchDelayMs ?? 100;
    let failures = 0;
    while (!this.closing) {
      let credential: Credential;
      let entries: SpoolEntry[];
      try {
        // The credential first: events taken from the spool are handed out once per process.
        credential = await this.credential();
        entries = await spool.take(this.batchSize);
        failures = 0;
      } catch (err) {
        this.failed(new UsageStreamError(ConnectError.from(err)));
        await this.pause(backoffDelay(failures++, this.opts.backoff));
        continue;
      }
      if (entries.length === 0) {
        if (await this.pause(idleMs, spool)) return;
        continue;
      }
      if (entries.length < this.batchSize && delayMs > 0 && this.flushes.length === 0) {
        await this.pause(delayMs);
        entries.push(...(await spool.take(this.batchSize - entries.length).catch(() => [])));
      }
      yield { batchId: `${this.session}-${++this.batchSeq}`, events: toProto(entries, credential), entries };
    }
  }

  /** How events that do not name their license by id name it: read per batch, so a renewed lease is used. */
  private async credential(): Promise<Credential> {
    const { licenseKey, lease, licenseId } = this.opts;
    if (licenseKey) return { licenseKey };
    if (lease !== undefined) {
      const token = typeof lease === "function" ? await lease() : lease;
      if (!token) throw new ConnectError("no lease to send usage with yet", Code.Unavailable);
      return { lease: token };
    }
    return { licenseId: licenseId ?? "" };
  }

  private async acknowledged(spool: UsageSpool, batch: SpoolBatch, ack: StreamUsageResponse) {
    this.counters.acked += ack.accepted + ack.duplicates;
    this.counters.duplicates += ack.duplicates;
    this.counters.rejected += ack.rejected.length;
    await spool.settle(batch.entries);
    if (ack.rejected.length > 0 && this.opts.onRejected) {
      this.opts.onRejected(
        ack.rejected.flatMap((r) => {
          const e = batch.entries[r.index]?.event;
          return e
            ? [
                {
                  idempotencyKey: e.key,
                  metric: e.metric,
                  quantity: e.quantity,
                  time: new Date(e.time),
                  attributes: e.attributes ?? {},
                  agentId: e.agentId,
                  licenseId: e.licenseId,
                  reason: r.reason,
                  message: r.message,
                },
              ]
            : [];
        }),
      );
    }
    const settled = spool.settledBefore();
    for (let i = this.flushes.length - 1; i >= 0; i--) {
      if (this.flushes[i]!.target <= settled) this.flushes.splice(i, 1)[0]!.resolve();
    }
    this.opts.onProgress?.(this.stats());
  }
}
