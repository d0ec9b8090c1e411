import { openDatabase, sql, type Database, type EntityManager, type Schema } from "./db.js";
import { DomainError } from "./errors.js";
import type { Logger } from "./logger.js";
import { PostgresTarget } from "./postgres-target.js";
import { every, type Every } from "./worker.js";

/**
 * Reads that tolerate bounded staleness (lists, summaries, audit reads and proofs: docs/replicas.md) run through
 * `run`: on a streaming replica whose lag is under the bound when one is, else on the primary. Everything else (writes,
 * transactions, idempotency, API key lookups, ValidateLicense, activation, usage ingest) uses the Database as before.
 */
export interface ReplicaReads {
  run<T>(read: (em: EntityManager) => Promise<T>): Promise<T>;
}

/** How often each replica's lag is measured. */
export const REPLICA_PROBE_MS = 250;
/** A probe that has not answered in this long counts as failed (the replica is skipped until one answers). */
const PROBE_TIMEOUT_MS = 1_000;
/** Primary WAL samples are kept this long: lag beyond it shows as at least this much. */
const SAMPLE_WINDOW_MS = 120_000;

/** Why a replica is, or is not, serving reads: logged once per change. */
export type ReplicaState = "fresh" | "lagging" | "unreachable" | "not a standby";

export interface ReplicaStatus {
  /** host:port (no credentials), for logs and the `replica` label of metrics. */
  name: string;
  state: ReplicaState;
  /** Milliseconds behind the primary now (see `freshAsOf`); undefined before the first measurement or when down. */
  lagMs: number | undefined;
}

/** Where routed reads were served (metrics). */
export interface ReadCounts {
  replica: number;
  primary: number;
}

interface Replica {
  name: string;
  db: Database;
  state: ReplicaState | "starting";
  /**
   * Every write committed on the primary before this time (ms of the set's monotonic clock) has been replayed on the
   * replica: the latest primary sample whose WAL position the replica's replay position has reached. Undefined:
   * unknown (never measured, or the last probe failed).
   */
  freshAsOf: number | undefined;
  probing: boolean;
}

/** PostgreSQL's `X/Y` LSN text as one number. */
export function lsnValue(text: string): bigint {
  const [hi, lo] = text.split("/");
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}

/**
 * A primary's WAL insert position over time, and what it says about a replica: given the replica's replay position R,
 * the latest sample time t with position(t) ≤ R. A write that committed before t has its commit record below the
 * position sampled at t, so the replica, having replayed up to R, shows it.
 */
export class WalTimeline {
  /** (time sent, position) in time order; a run of equal positions keeps its latest time only. */
  private samples: { at: number; lsn: bigint }[] = [];

  add(at: number, lsn: bigint) {
    const last = this.samples[this.samples.length - 1];
    if (last && last.lsn === lsn) last.at = at;
    else this.samples.push({ at, lsn });
    const keepFrom = at - SAMPLE_WINDOW_MS;
    let drop = 0;
    while (drop < this.samples.length - 1 && this.samples[drop]!.at < keepFrom) drop++;
    if (drop > 0) this.samples.splice(0, drop);
  }

  /** The latest sample time whose position `replayed` has reached; undefined if none kept has been reached. */
  freshAsOf(replayed: bigint): number | undefined {
    for (let i = this.samples.length - 1; i >= 0; i--) {
      const s = this.samples[i]!;
      if (s.lsn <= replayed) return s.at;
    }
    return undefined;
  }
}

/**
 * The replicas of LICENSD_DATABASE_REPLICA_URL and the loop that measures their lag. Every REPLICA_PROBE_MS: the
 * primary's `pg_current_wal_insert_lsn()` is sampled (with the time the query was sent), then each replica's
 * `pg_last_wal_replay_lsn()`; the replica is fresh as of the latest sample it has replayed past (WalTimeline). An idle
 * primary's position does not move, so its latest sample is reached at once and an idle replica shows no lag. A read
 * goes to a replica only while now − freshAsOf < maxLagMs, checked when the read is routed: a replica whose probes stop
 * answering ages out on its own.
 */
/** How long a routed read waits for a replica before the primary answers it instead. */
export const REPLICA_QUERY_TIMEOUT_MS = 10_000;

export class ReplicaSet implements ReplicaReads {
  private readonly timeline = new WalTimeline();
  private loop: Every | undefined;
  private next = 0;
  private readonly inflight = new Set<Promise<void>>();
  readonly counts: ReadCounts = { replica: 0, primary: 0 };

  private constructor(
    private readonly primary: Database,
    private readonly replicas: Replica[],
    readonly maxLagMs: number,
    private readonly logger: Logger,
    private readonly now: () => number,
  ) {}

  /**
   * Opens a pool per replica (connections are made on first use: a replica that is down at start is only logged) and
   * starts measuring. With no URLs, every read goes to the primary.
   */
  static async open(
    primary: Database,
    urls: readonly string[],
    opts: { maxLagMs: number; poolMax: number; logger: Logger; schema: Schema; now?: () => number },
  ): Promise<ReplicaSet> {
    const replicas: Replica[] = [];
    try {
      for (const url of urls) {
        const target = PostgresTarget.parse(url);
        const name = target.hosts.map((h) => `${h.host}:${h.port}`).join(",");
        // Routed reads never name statements: replicas may sit behind a transaction-pooling PgBouncer too.
        const db = await openDatabase(url, {
          poolMax: opts.poolMax,
          logger: opts.logger,
          schema: opts.schema,
          namedStatements: false,
          // A replica that hangs (stopped, a dead link with no RST) fails the read, which the primary then answers.
          queryTimeoutMs: REPLICA_QUERY_TIMEOUT_MS,
        });
        replicas.push({ name, db, state: "starting", freshAsOf: undefined, probing: false });
      }
    } catch (err) {
      await Promise.all(replicas.map((r) => r.db.close().catch(() => undefined)));
      throw err;
    }
    // A monotonic clock: lag is a difference of two readings of it, which a wall-clock step must not distort.
    const now = opts.now ?? (() => performance.now());
    const set = new ReplicaSet(primary, replicas, opts.maxLagMs, opts.logger, now);
    if (replicas.length > 0) {
      opts.logger.info(
        { replicas: replicas.map((r) => r.name), maxLagMs: opts.maxLagMs },
        "read replicas configured: lists, summaries and audit reads go to a replica whose lag is under the bound",
      );
      await set.probe().catch((err: unknown) => opts.logger.warn({ err }, "replica lag probe failed"));
      await Promise.all(set.inflight);
      set.loop = every(REPLICA_PROBE_MS, () => set.probe(), {
        name: "replica lag probe",
        logger: opts.logger,
        maxBackoffMs: 2_000,
      });
    }
    return set;
  }

  async run<T>(read: (em: EntityManager) => Promise<T>): Promise<T> {
    const replica = this.pick();
    if (!replica) {
      this.counts.primary++;
      return read(this.primary.em());
    }
    try {
      const result = await read(replica.db.em());
      this.counts.replica++;
      return result;
    } catch (err) {
      // The replica may be going away, or not have what was asked yet (a NOT_FOUND, a tree size past its head):
      // the primary answers instead, so lag can make a read older but never make it fail.
      if (!(err instanceof DomainError)) this.unusable(replica, "unreachable", err);
      this.counts.primary++;
      return read(this.primary.em());
    }
  }

  /** Each replica's state and lag now. */
  status(): ReplicaStatus[] {
    const now = this.now();
    return this.replicas.map((r) => ({
      name: r.name,
      // A replica last measured fresh whose measurements stopped since is aged out by the clock: lagging.
      state: this.usable(r, now)
        ? "fresh"
        : r.state === "fresh"
          ? "lagging"
          : r.state === "starting"
            ? "unreachable"
            : r.state,
      lagMs: r.freshAsOf === undefined ? undefined : Math.max(0, now - r.freshAsOf),
    }));
  }

  async close(): Promise<void> {
    await this.loop?.stop();
    await Promise.all(this.inflight);
    await Promise.all(this.replicas.map((r) => r.db.close().catch(() => undefined)));
  }

  /** A usable replica, round-robin; undefined: the primary serves. */
  private pick(): Replica | undefined {
    const now = this.now();
    for (let i = 0; i < this.replicas.length; i++) {
      const r = this.replicas[(this.next + i) % this.replicas.length]!;
      if (this.usable(r, now)) {
        this.next = (this.next + i + 1) % this.replicas.length;
        return r;
      }
    }
    return undefined;
  }

  private usable(r: Replica, now: number): boolean {
    return r.state === "fresh" && r.freshAsOf !== undefined && now - r.freshAsOf < this.maxLagMs;
  }

  /**
   * One measurement: the primary's WAL position first, then every replica's replay position. The replicas' probes are
   * not waited for: one that hangs (up to PROBE_TIMEOUT_MS) must not slow the others' measurements.
   */
  private async probe(): Promise<void> {
    const sentAt = this.now();
    const [row] = await sql<{ lsn: string }>(this.primary, "select pg_current_wal_insert_lsn()::text as lsn");
    this.timeline.add(sentAt, lsnValue(row!.lsn));
    for (const r of this.replicas) {
      if (r.probing) continue;
      const probe = this.probeReplica(r).finally(() => this.inflight.delete(probe));
      this.inflight.add(probe);
    }
  }

  private async probeReplica(r: Replica): Promise<void> {
    r.probing = true;
    let timer: NodeJS.Timeout | undefined;
    try {
      const answer = sql<{ lsn: string | null; standby: boolean }>(
        r.db,
        "select pg_last_wal_replay_lsn()::text as lsn, pg_is_in_recovery() as standby",
      );
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer in ${PROBE_TIMEOUT_MS} ms`)), PROBE_TIMEOUT_MS);
      });
      const [row] = await Promise.race([answer, timeout]);
      if (!row?.standby || row.lsn === null) {
        // A promoted or misconfigured server: its data need not follow the primary's at all.
        this.unusable(r, "not a standby");
        return;
      }
      r.freshAsOf = this.timeline.freshAsOf(lsnValue(row.lsn));
      this.setState(r, this.usable({ ...r, state: "fresh" }, this.now()) ? "fresh" : "lagging");
    } catch (err) {
      this.unusable(r, "unreachable", err);
    } finally {
      clearTimeout(timer);
      r.probing = false;
    }
  }

  private unusable(r: Replica, state: ReplicaState, err?: unknown) {
    r.freshAsOf = undefined;
    this.setState(r, state, err);
  }

  private setState(r: Replica, state: ReplicaState, err?: unknown) {
    if (r.state === state) return;
    const was = r.state;
    r.state = state;
    const lagMs = r.freshAsOf === undefined ? undefined : Math.max(0, this.now() - r.freshAsOf);
    const fields = { replica: r.name, was, state, lagMs, maxLagMs: this.maxLagMs, err: err ? String(err) : undefined };
    if (state === "fresh") this.logger.info(fields, "replica serving reads");
    else this.logger.warn(fields, `replica skipped (${state}): its reads go to the primary`);
  }
}
