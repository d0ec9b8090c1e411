import { EventEmitter } from "node:events";
import type pg from "pg";
import { backoff } from "../platform/backoff.js";
import type { Logger } from "../platform/logger.js";
import { PostgresTarget } from "../platform/postgres-target.js";
import { AUDIT_CHANNEL } from "./entry.js";

/**
 * This process's ear on the audit log: one LISTEN connection that hears every entry
 * committed by any instance on the database, and wakes the tails (and, later, caches
 * and the webhook dispatcher) waiting on that tenant. If the connection drops it
 * reconnects (with capped, jittered backoff), and every waiter is woken to re-read, so nothing is missed.
 */
const ANY_ENTRY = Symbol("any entry");
const RECONNECTED = Symbol("reconnected");

export class AuditFeed {
  private client: pg.Client | undefined;
  private readonly latest = new Map<string, number>();
  private readonly wake = new EventEmitter();
  private stopped = false;
  private retry: NodeJS.Timeout | undefined;
  /** Reconnect delays: from 0.25–0.5 s, doubling to 15–30 s while the database stays away. */
  private readonly delays = backoff({ baseMs: 500, capMs: 30_000 });
  /** Other channels this connection listens on (platform's cross-instance messages), by name. */
  private readonly channels = new Map<string, (payload: string) => void>();
  /** Where LISTEN goes: with a multi-host URL, the writable host (a standby refuses LISTEN). */
  private readonly target: PostgresTarget;

  constructor(
    url: string,
    private readonly logger: Logger,
  ) {
    this.target = PostgresTarget.parse(url);
    this.wake.setMaxListeners(0);
  }

  async start(): Promise<void> {
    await this.connect();
  }

  private async connect(): Promise<void> {
    const client = await this.target.connect({ keepAlive: true });
    client.on("notification", (msg) => {
      const other = this.channels.get(msg.channel);
      if (other) return other(msg.payload ?? "");
      const [tenantId, seqText] = (msg.payload ?? "").split(":");
      const seq = Number(seqText);
      if (!tenantId || !Number.isInteger(seq)) return;
      if (seq > (this.latest.get(tenantId) ?? 0)) this.latest.set(tenantId, seq);
      this.wake.emit(tenantId, seq);
      this.wake.emit(ANY_ENTRY, tenantId, seq);
    });
    client.on("error", (err) => {
      this.logger.warn({ err: err.message }, "audit feed connection lost; reconnecting");
      this.reconnectSoon();
    });
    client.on("end", () => this.reconnectSoon());
    try {
      await client.query(`listen ${AUDIT_CHANNEL}`);
      for (const channel of this.channels.keys()) await client.query(`listen ${channel}`);
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
    this.client = client;
    this.delays.reset();
    this.wake.emit("*");
    this.wake.emit(RECONNECTED);
  }

  private reconnectSoon() {
    if (this.stopped || this.retry) return;
    this.client = undefined;
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.connect().catch(() => this.reconnectSoon());
    }, this.delays.next());
  }

  /**
   * Resolves when an entry past `afterSeq` is announced for the tenant, when the feed
   * reconnects, after `timeoutMs`, or when `signal` aborts — whichever is first.
   */
  waitFor(tenantId: string, afterSeq: number, timeoutMs: number, signal: AbortSignal): Promise<void> {
    if ((this.latest.get(tenantId) ?? 0) > afterSeq || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake.off(tenantId, onEntry);
        this.wake.off("*", done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const onEntry = (seq: number) => {
        if (seq > afterSeq) done();
      };
      const timer = setTimeout(done, timeoutMs);
      this.wake.on(tenantId, onEntry);
      this.wake.on("*", done);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  /**
   * A change this process committed, its entries sequenced, told at once (the NOTIFY comes back later): the
   * `onEntry` listeners run now, so a caller that changed something reads its own write.
   */
  announce(tenantId: string) {
    this.wake.emit(ANY_ENTRY, tenantId, this.latest.get(tenantId) ?? 0);
  }

  /**
   * Calls `listener` for every entry committed on any instance, and (first) for this process's own at once (caches
   * invalidate on it).
   */
  onEntry(listener: (tenantId: string, seq: number) => void) {
    this.wake.on(ANY_ENTRY, listener);
  }

  /** Calls `listener` whenever the LISTEN connection is (re)established: notifications may have been missed. */
  onReconnect(listener: () => void) {
    this.wake.on(RECONNECTED, listener);
  }

  /** Also hears `channel` (a plain identifier) on the same connection, now and after every reconnect. */
  async listen(channel: string, onMessage: (payload: string) => void): Promise<void> {
    this.channels.set(channel, onMessage);
    await this.client?.query(`listen ${channel}`);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    this.wake.emit("*");
    await this.client?.end().catch(() => undefined);
  }
}
