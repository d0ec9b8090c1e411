import type { Database, EntityManager, SqlRunner } from "../platform/db.js";
import { sql } from "../platform/db.js";
import type { Logger } from "../platform/logger.js";
import type { AuditKeyring } from "./audit-keyring.js";
import { AUDIT_CHANNEL, entryHash, GENESIS_HASH, type EntryFields } from "./entry.js";
import { appendLeaf, leafHash } from "./merkle.js";

/**
 * Gives queued audit entries their place in the tenant's log. A change writes its entry to
 * audit_pending in its own transaction, taking no lock (events.ts); right after it commits,
 * the writer asks this process's sequencer to settle the tenant, which, holding the tenant's
 * audit_heads row (the one lock every sequencer of the tenant takes, on any instance), moves
 * the queue into audit_events in batches: seq, hash chain, HMAC, the Merkle tree's nodes and the
 * new head are written and the queue rows deleted in one transaction, announced by one NOTIFY.
 *
 * So the serial section per tenant is one short transaction per batch, not every change's own
 * transaction: concurrent changes of a tenant commit in parallel and share one sequencing
 * (BENCHMARKS.md, Audit and Writes). What the log promises is unchanged: an entry is queued
 * if and only if its change committed, and every queued entry is sequenced (by its writer's
 * settle, or, after a crash, by any instance's sweep); seqs are gapless because only the
 * head's holder assigns them; readers see only sequenced entries.
 */

/** A queued entry, as the sequencer reads it back. */
export interface Queued {
  pid: number | null;
  id: string;
  type: string;
  subject: string;
  actor: string;
  payload: unknown;
  occurredAt: Date;
}

/** At most this many entries are sequenced per transaction. */
export const SEQUENCE_BATCH = 1000;

interface HeadRow {
  head_seq: string;
  head_hash: Buffer;
  head_frontier: Buffer;
  queued: {
    pid: number;
    id: string;
    type: string;
    subject: string;
    actor: string;
    payload: unknown;
    occurred_ms: number;
  }[];
}

/** The head as read, and the queued entries after it (oldest first), with `own` last. */
interface Batch {
  seq: number;
  hash: Buffer;
  frontier: Buffer;
  queued: Queued[];
  /** How many of `queued` came from the queue. */
  taken: number;
}

function batchOf(row: HeadRow, own?: Queued): Batch {
  const queued: Queued[] = row.queued.map((r) => ({
    pid: r.pid,
    id: r.id,
    type: r.type,
    subject: r.subject,
    actor: r.actor,
    payload: r.payload,
    occurredAt: new Date(r.occurred_ms),
  }));
  const taken = queued.length;
  if (own) queued.push(own);
  return { seq: Number(row.head_seq), hash: row.head_hash, frontier: row.head_frontier, queued, taken };
}

/**
 * Writes the batch after its head: entries, tree nodes, the new head, the queue rows taken, and the NOTIFY, in one
 * statement. With `expectSeq`, only if the head is still at that seq (nothing is written otherwise). Returns whether
 * it wrote, and the new head seq.
 */
async function writeBatch(
  on: SqlRunner,
  keyring: AuditKeyring,
  tenantId: string,
  batch: Batch,
  expectSeq: number | null,
): Promise<{ written: boolean; seq: number }> {
  let seq = batch.seq;
  let prevHash = batch.hash;
  let frontier: Buffer[] = [];
  for (let i = 0; i < batch.frontier.length; i += 32) frontier.push(batch.frontier.subarray(i, i + 32));
  const cols = { seq: [] as number[], prev: [] as Buffer[], hash: [] as Buffer[], kid: [] as string[] };
  const sigs: Buffer[] = [];
  const nodes = { level: [] as number[], index: [] as number[], hash: [] as Buffer[] };
  for (const q of batch.queued) {
    seq++;
    const fields: EntryFields = { tenantId, seq, ...q, prevHash };
    const hash = entryHash(fields);
    const { kid, signature } = keyring.sign(hash);
    const tree = appendLeaf(frontier, seq - 1, leafHash(hash));
    for (const n of tree.completed) {
      nodes.level.push(n.level);
      nodes.index.push(n.index);
      nodes.hash.push(n.hash);
    }
    cols.seq.push(seq);
    cols.prev.push(prevHash);
    cols.hash.push(hash);
    cols.kid.push(kid);
    sigs.push(signature);
    frontier = tree.frontier;
    prevHash = hash;
  }
  const queued = batch.queued;
  // Every part is conditional on the head's update (when expectSeq is null it always matches).
  const rows = await sql<{ tenant_id: string }>(
    on,
    `with head as (
       update audit_heads set seq = $17, hash = $18, frontier = $19
        where tenant_id = $1 and ($22::bigint is null or seq = $22::bigint)
       returning tenant_id
     ), entries as (
       insert into audit_events
         (tenant_id, seq, id, type, subject, actor, payload, occurred_at, prev_hash, hash, kid, signature)
       select $1, e.seq, e.id, e.type, e.subject, e.actor, e.payload::jsonb, e.occurred_at::timestamptz,
              e.prev_hash, e.hash, e.kid, e.signature
         from unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                     $9::bytea[], $10::bytea[], $11::text[], $12::bytea[])
           as e(seq, id, type, subject, actor, payload, occurred_at, prev_hash, hash, kid, signature)
        where exists (select from head)
     ), nodes as (
       insert into audit_tree_nodes (tenant_id, level, index, hash)
       select $1, n.level, n.index, n.hash
         from unnest($13::smallint[], $14::bigint[], $15::bytea[]) as n(level, index, hash)
        where exists (select from head)
     ), taken as (
       delete from audit_pending where pid = any($16::bigint[]) and exists (select from head)
     )
     select tenant_id, pg_notify($20, $21) from head`,
    [
      tenantId,
      cols.seq,
      queued.map((q) => q.id),
      queued.map((q) => q.type),
      queued.map((q) => q.subject),
      queued.map((q) => q.actor),
      queued.map((q) => JSON.stringify(q.payload)),
      queued.map((q) => q.occurredAt.toISOString()),
      cols.prev,
      cols.hash,
      cols.kid,
      sigs,
      nodes.level,
      nodes.index,
      nodes.hash,
      queued.slice(0, batch.taken).map((q) => q.pid),
      seq,
      prevHash,
      Buffer.concat(frontier),
      AUDIT_CHANNEL,
      `${tenantId}:${seq}`,
      expectSeq,
    ],
    { name: "licensd-audit-sequence" },
  );
  return { written: rows.length > 0, seq };
}

/**
 * On `em`'s transaction: locks the tenant's head, then appends its queued entries (oldest first, at most `limit`;
 * all when null) and `own` after them; the head stays locked until the transaction ends. Returns how many queued
 * entries it took and the new head seq; undefined when `skipLocked` and another transaction holds the head.
 */
export async function sequence(
  em: EntityManager,
  keyring: AuditKeyring,
  tenantId: string,
  opts: { limit: number | null; own?: Queued; skipLocked?: boolean },
): Promise<{ taken: number; seq: number } | undefined> {
  // Locks the head, then reads the queue (migration AuditPending): one round trip.
  const [row] = await sql<HeadRow>(em, `select * from audit_lock_head($1, $2, $3)`, [
    tenantId,
    opts.skipLocked ?? false,
    opts.limit,
  ]);
  if (!row) return undefined;
  const batch = batchOf(row, opts.own);
  if (batch.queued.length === 0) return { taken: 0, seq: batch.seq };
  const { seq } = await writeBatch(em, keyring, tenantId, batch, null);
  return { taken: batch.taken, seq };
}

/** The head and the queue after it, read in one snapshot, without a lock (the sequencer's optimistic read). */
const READ_QUEUE = `select h.seq as head_seq, h.hash as head_hash, h.frontier as head_frontier,
         coalesce((select jsonb_agg(jsonb_build_object(
                    'pid', q.pid, 'id', q.id, 'type', q.type, 'subject', q.subject, 'actor', q.actor,
                    'payload', q.payload, 'occurred_ms', (extract(epoch from q.occurred_at) * 1000)::bigint)
                    order by q.pid)
                     from (select * from audit_pending p where p.tenant_id = $1 order by p.pid limit $2) q),
                  '[]'::jsonb) as queued
    from audit_heads h where h.tenant_id = $1`;

/**
 * Sequences up to `limit` queued entries of the tenant with two autocommit statements and no lock held between them:
 * reads the head and the queue in one snapshot (a consistent pair: a batch moves queue rows and the head together),
 * then writes the batch only if the head has not moved since. Undefined when it had (another instance's sequencer, or
 * a writer appending at once, came first): nothing was written, read again.
 */
async function sequenceOptimistically(
  db: Database,
  keyring: AuditKeyring,
  tenantId: string,
  limit: number,
): Promise<{ taken: number; seq: number } | undefined> {
  let [row] = await sql<HeadRow>(db, READ_QUEUE, [tenantId, limit], { name: "licensd-audit-read-queue" });
  if (!row) {
    await sql(
      db,
      `insert into audit_heads (tenant_id, seq, hash, frontier) values ($1, 0, $2, '\\x') on conflict do nothing`,
      [tenantId, GENESIS_HASH],
    );
    [row] = await sql<HeadRow>(db, READ_QUEUE, [tenantId, limit], { name: "licensd-audit-read-queue" });
  }
  const batch = batchOf(row!);
  if (batch.taken === 0) return { taken: 0, seq: batch.seq };
  const { written, seq } = await writeBatch(db, keyring, tenantId, batch, batch.seq);
  return written ? { taken: batch.taken, seq } : undefined;
}

interface TenantRuns {
  running?: Promise<void>;
  /** When the last run ended (performance.now()); the tenant counts as contended for CONTENDED_MS after. */
  endedAt?: number;
  /** The run that starts when `running` ends: every settle asked during `running` shares it. */
  queued?: Promise<void>;
  /** A settle nobody waits on, due in LINGER_MS (settleSoon); a settle asked meanwhile starts it at once. */
  lingering?: { timer: NodeJS.Timeout; done: Promise<void>; start: () => void };
}

/**
 * How long a settle nobody waits on (settleSoon) lingers for more entries to share its run: under a load of
 * activations, a run every few ms carries several times more entries than runs back to back, for fewer statements
 * (BENCHMARKS.md, "Audited writes"); an entry's tails and webhooks hear of it this much later at most.
 */
export const LINGER_MS = 5;

/**
 * A tenant whose entries this process queued within this many ms appends by queueing: a writer that sequenced its
 * own entry would hold the head to its commit and stall the batches (BENCHMARKS.md, Audit).
 */
const CONTENDED_MS = 200;

export class AuditSequencer {
  private readonly runs = new Map<string, TenantRuns>();
  private sweeper: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  private sweepFailing = false;

  constructor(
    private readonly db: Database,
    private readonly keyring: AuditKeyring,
    private readonly opts: {
      logger: Logger;
      /** How often every tenant's queue is swept (entries whose writer died between commit and settle). */
      sweepMs: number;
      /** Told after each committed batch: the tenant and its new head seq. */
      onSequenced?: (tenantId: string, seq: number) => void;
    },
  ) {}

  /** Sweeps now (what a crashed instance left queued) and every `sweepMs`. */
  start(): void {
    this.sweeper = setInterval(() => void this.sweep(), this.opts.sweepMs).unref();
    void this.sweep();
  }

  async stop(): Promise<void> {
    clearInterval(this.sweeper);
    for (const r of this.runs.values()) r.lingering?.start();
    await this.sweeping;
    await Promise.allSettled([...this.runs.values()].flatMap((r) => [r.running, r.queued, r.lingering?.done]));
  }

  /**
   * Resolves once every entry of the tenant queued before the call is sequenced (by this
   * process or another instance). Concurrent calls share runs: while one runs, every later
   * call waits for the single next one, which takes all their entries in one batch.
   */
  settle(tenantId: string): Promise<void> {
    const tenant = this.runsOf(tenantId);
    const lingering = tenant.lingering;
    if (lingering) {
      lingering.start();
      return lingering.done;
    }
    if (tenant.queued) return tenant.queued;
    const startRun = (): Promise<void> => {
      const run = this.drain(tenantId).finally(() => {
        if (tenant.running === run) tenant.running = undefined;
        tenant.endedAt = performance.now();
        setTimeout(() => {
          if (!tenant.running && !tenant.queued && !tenant.lingering && this.runs.get(tenantId) === tenant)
            this.runs.delete(tenantId);
        }, CONTENDED_MS).unref();
      });
      tenant.running = run;
      return run;
    };
    if (!tenant.running) return startRun();
    const next = tenant.running
      .catch(() => undefined)
      .then(() => {
        tenant.queued = undefined;
        return startRun();
      });
    tenant.queued = next;
    return next;
  }

  /**
   * `settle` for a caller that does not wait (events.queuedSoon): the run starts within LINGER_MS, taking whatever was
   * queued meanwhile, or at once when a waiting caller asks (settle). Never rejects; a failure is logged by the run and
   * the entries stay queued for the sweep.
   */
  settleSoon(tenantId: string): void {
    const tenant = this.runsOf(tenantId);
    if (tenant.lingering || tenant.queued) return;
    let start!: () => void;
    const started = new Promise<void>((resolve) => {
      start = resolve;
    });
    const lingering = {
      timer: setTimeout(() => lingering.start(), LINGER_MS),
      start: () => {
        clearTimeout(lingering.timer);
        if (tenant.lingering === lingering) tenant.lingering = undefined;
        start();
      },
      done: started.then(() => this.settle(tenantId)),
    };
    tenant.lingering = lingering;
    lingering.done.catch(() => undefined);
  }

  private runsOf(tenantId: string): TenantRuns {
    let runs = this.runs.get(tenantId);
    if (!runs) {
      runs = {};
      this.runs.set(tenantId, runs);
    }
    return runs;
  }

  /**
   * Whether this process queued the tenant's entries lately (a run is going, or ended within CONTENDED_MS): then a new
   * entry joins the queue rather than taking the head in its writer's transaction.
   */
  contended(tenantId: string): boolean {
    const runs = this.runs.get(tenantId);
    if (!runs) return false;
    return (
      Boolean(runs.running || runs.queued || runs.lingering) || performance.now() - (runs.endedAt ?? 0) < CONTENDED_MS
    );
  }

  private async drain(tenantId: string): Promise<void> {
    try {
      for (;;) {
        const done = await sequenceOptimistically(this.db, this.keyring, tenantId, SEQUENCE_BATCH);
        if (!done) continue; // the head moved under the batch: read again
        if (done.taken > 0) this.opts.onSequenced?.(tenantId, done.seq);
        if (done.taken < SEQUENCE_BATCH) return;
      }
    } catch (err) {
      this.opts.logger.warn({ err: (err as Error).message, tenantId }, "audit entries stay queued (sequencing failed)");
      throw err;
    }
  }

  /** Settles every tenant with queued entries; resolves when done (failures are logged, and retried next sweep). */
  sweep(): Promise<void> {
    this.sweeping ??= (async () => {
      try {
        const tenants = await sql<{ tenant_id: string }>(
          this.db,
          `select distinct tenant_id from audit_pending limit 10000`,
        );
        await Promise.all(tenants.map((t) => this.settle(t.tenant_id)));
        this.sweepFailing = false;
      } catch (err) {
        // Once per outage: the sweep retries every sweepMs, and a settle's failure is logged by its run.
        if (!this.sweepFailing) this.opts.logger.warn({ err: (err as Error).message }, "audit sweep failed; retrying");
        this.sweepFailing = true;
      } finally {
        this.sweeping = undefined;
      }
    })();
    return this.sweeping;
  }
}
