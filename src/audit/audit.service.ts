import type { Clock } from "../platform/clock.js";
import { affectedRows, sql, type Database, type EntityManager } from "../platform/db.js";
import { failedPrecondition, invalidArgument, notFound } from "../platform/errors.js";
import type { SigningKeyStore } from "../platform/signing-keys.js";
import { verifyEd25519 } from "../platform/signing-keys.js";
import type { Page } from "../platform/pagination.js";
import type { AuditKeyring } from "../events/audit-keyring.js";
import { entryHash, GENESIS_HASH, type EntryFields, type Events } from "../events/events.js";
import type { AuditFeed } from "../events/audit-feed.js";
import { checkpointText, cutText } from "./checkpoint.js";
import {
  consistencyProof,
  EMPTY_ROOT,
  inclusionProof,
  leafHash,
  nodeHash,
  rootHash,
  withNodes,
  type PerfectNode,
} from "../events/merkle.js";

/** An audit entry as stored: the hashed fields, and the hash and signature over them. */
export interface AuditEntry extends EntryFields {
  prevHash: Buffer;
  hash: Buffer;
  kid: string;
  signature: Buffer;
}

export interface AuditFilters {
  subject?: string;
  typePrefix?: string;
  actor?: string;
  start?: Date;
  end?: Date;
}

export type ChainProblem = "HASH_MISMATCH" | "BROKEN_LINK" | "BAD_SIGNATURE" | "MISSING_SEQ" | "TREE_MISMATCH";

export interface ChainReport {
  valid: boolean;
  eventsChecked: number;
  firstBadSeq: number;
  problem?: ChainProblem;
  detail: string;
  startSeq: number;
  endSeq: number;
}

export interface SignedCheckpoint {
  tenantId: string;
  treeSize: number;
  rootHash: Buffer;
  signTime: Date;
  kid: string;
  signature: Buffer;
  signedText: string;
}

export type TailItem = { event: AuditEntry } | { keepAlive: number };

interface Row {
  tenant_id: string;
  seq: string;
  id: string;
  type: string;
  subject: string;
  actor: string;
  payload: unknown;
  occurred_ms: string;
  prev_hash: Buffer;
  hash: Buffer;
  kid: string;
  signature: Buffer;
}

// Timestamps are read as epoch milliseconds: exact, and independent of the driver's type parsing.
const columns = (t = "") =>
  `${t}tenant_id, ${t}seq, ${t}id, ${t}type, ${t}subject, ${t}actor, ${t}payload,
   (extract(epoch from ${t}occurred_at) * 1000)::bigint as occurred_ms,
   ${t}prev_hash, ${t}hash, ${t}kid, ${t}signature`;
const COLUMNS = columns();

const toEntry = (r: Row): AuditEntry => ({
  tenantId: r.tenant_id,
  seq: Number(r.seq),
  id: r.id,
  type: r.type,
  subject: r.subject,
  actor: r.actor,
  payload: r.payload,
  occurredAt: new Date(Number(r.occurred_ms)),
  prevHash: r.prev_hash,
  hash: r.hash,
  kid: r.kid,
  signature: r.signature,
});

/** Escapes LIKE metacharacters so a type prefix matches literally. */
const likePrefix = (prefix: string) => `${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

/**
 * Reading, tailing, proving and pruning the audit log. The log is append-only rows read
 * by seq ranges, with no unit of work to track, so this module speaks SQL directly.
 */
export function createAuditService(deps: {
  db: Database;
  clock: Clock;
  keyring: AuditKeyring;
  signingKeys: SigningKeyStore;
  feed: AuditFeed;
  events: Events;
}) {
  const { db, clock, keyring, signingKeys, feed, events } = deps;

  function where(tenantId: string, f: AuditFilters, params: unknown[]): string {
    const clauses = [`tenant_id = $${params.push(tenantId)}`];
    if (f.subject) clauses.push(`subject = $${params.push(f.subject)}`);
    if (f.typePrefix) clauses.push(`type like $${params.push(likePrefix(f.typePrefix))}`);
    if (f.actor) clauses.push(`actor = $${params.push(f.actor)}`);
    if (f.start) clauses.push(`occurred_at >= $${params.push(f.start)}`);
    if (f.end) clauses.push(`occurred_at < $${params.push(f.end)}`);
    return clauses.join(" and ");
  }

  async function headSeq(em: EntityManager, tenantId: string): Promise<number> {
    const [row] = await sql<{ seq: string }>(em, `select seq from audit_heads where tenant_id = $1`, [tenantId]);
    return row ? Number(row.seq) : 0;
  }

  function nodeFetcher(em: EntityManager, tenantId: string) {
    return async (keys: { level: number; index: number }[]) => {
      const found = new Map<string, Buffer>();
      if (keys.length === 0) return found;
      const pairs = keys.map((_, i) => `($${2 + 2 * i}, $${3 + 2 * i})`).join(", ");
      const rows = await sql<{ level: number; index: string; hash: Buffer }>(
        em,
        `select level, index, hash from audit_tree_nodes where tenant_id = $1 and (level, index) in (${pairs})`,
        [tenantId, ...keys.flatMap((k) => [k.level, k.index])],
      );
      for (const r of rows) found.set(`${r.level}:${r.index}`, r.hash);
      return found;
    };
  }

  const computeWithTree = <T>(em: EntityManager, tenantId: string, compute: (node: PerfectNode) => T) =>
    withNodes(compute, nodeFetcher(em, tenantId));

  return {
    async list(tenantId: string, filters: AuditFilters, page: Page, newestFirst: boolean): Promise<AuditEntry[]> {
      const params: unknown[] = [];
      let text = `select ${COLUMNS} from audit_events where ${where(tenantId, filters, params)}`;
      if (page.after !== undefined) text += ` and seq ${newestFirst ? "<" : ">"} $${params.push(page.after)}`;
      text += ` order by seq ${newestFirst ? "desc" : "asc"} limit $${params.push(page.size + 1)}`;
      return (await sql<Row>(db, text, params)).map(toEntry);
    },

    async get(tenantId: string, id: string): Promise<AuditEntry> {
      const [row] = await sql<Row>(db, `select ${COLUMNS} from audit_events where tenant_id = $1 and id = $2`, [
        tenantId,
        id,
      ]);
      if (!row) throw notFound("audit_event", id);
      return toEntry(row);
    },

    /** Recomputes every entry of [start, end]; reports the first that is wrong. */
    async verify(tenantId: string, startSeq: number, endSeq: number): Promise<ChainReport> {
      const em = db.em();
      const head = await headSeq(em, tenantId);
      const [cut] = await sql<{ seq: string; hash: Buffer; cut_ms: string; kid: string; signature: Buffer }>(
        em,
        `select seq, hash, (extract(epoch from cut_at) * 1000)::bigint as cut_ms, kid, signature
           from audit_cuts where tenant_id = $1 order by seq desc limit 1`,
        [tenantId],
      );
      const floor = cut ? Number(cut.seq) + 1 : 1;
      const start = startSeq === 0 ? floor : startSeq;
      const end = endSeq === 0 ? head : endSeq;
      if (start < floor)
        throw invalidArgument("start_seq", `entries before ${floor} were removed by retention`, "PRUNED");
      if (end > head) throw invalidArgument("end_seq", `the log ends at ${head}`, "OUT_OF_RANGE");
      const report = (r: Omit<ChainReport, "startSeq" | "endSeq">): ChainReport => ({
        ...r,
        startSeq: start,
        endSeq: end,
      });
      if (start > end) return report({ valid: true, eventsChecked: 0, firstBadSeq: 0, detail: "empty range" });

      let expectedPrev: Buffer;
      if (start === floor && cut) {
        const text = cutText(tenantId, Number(cut.seq), cut.hash, new Date(Number(cut.cut_ms)));
        const key = signingKeys.publicKeys().find((k) => k.kid === cut.kid);
        if (!key || !verifyEd25519(key.publicKey, Buffer.from(text), cut.signature)) {
          return report({
            valid: false,
            eventsChecked: 0,
            firstBadSeq: start,
            problem: "BROKEN_LINK",
            detail: `the retention cut at ${cut.seq} is not signed by a known key`,
          });
        }
        expectedPrev = cut.hash;
      } else if (start === 1) {
        expectedPrev = GENESIS_HASH;
      } else {
        const [prev] = await sql<{ hash: Buffer }>(
          em,
          `select hash from audit_events where tenant_id = $1 and seq = $2`,
          [tenantId, start - 1],
        );
        if (!prev)
          return report({
            valid: false,
            eventsChecked: 0,
            firstBadSeq: start - 1,
            problem: "MISSING_SEQ",
            detail: `entry ${start - 1} is missing`,
          });
        expectedPrev = prev.hash;
      }

      let checked = 0;
      let expectedSeq = start;
      // Perfect subtrees rebuilt from the leaves of the range, checked against the stored
      // tree: an entry can't be swapped for another with a consistent-looking tree.
      const stack: { level: number; index: number; hash: Buffer }[] = [];
      const BATCH = 2000;
      while (expectedSeq <= end) {
        const rows = await sql<Row & { leaf: Buffer | null }>(
          em,
          `select ${columns("e.")}, n.hash as leaf
             from audit_events e
             left join audit_tree_nodes n on n.tenant_id = e.tenant_id and n.level = 0 and n.index = e.seq - 1
            where e.tenant_id = $1 and e.seq >= $2 and e.seq <= $3 order by e.seq limit $4`,
          [tenantId, expectedSeq, end, BATCH],
        );
        if (rows.length === 0) break;
        const rebuilt: { level: number; index: number; hash: Buffer; seq: number }[] = [];
        for (const row of rows) {
          const e = toEntry(row);
          const bad = (problem: ChainProblem, detail: string, seq = e.seq) =>
            report({ valid: false, eventsChecked: checked, firstBadSeq: seq, problem, detail });
          if (e.seq !== expectedSeq)
            return bad("MISSING_SEQ", `entry ${expectedSeq} is missing (next present is ${e.seq})`, expectedSeq);
          if (!entryHash(e).equals(e.hash))
            return bad("HASH_MISMATCH", `entry ${e.seq}: stored hash does not match its contents`);
          if (!e.prevHash.equals(expectedPrev))
            return bad("BROKEN_LINK", `entry ${e.seq}: prev_hash is not the hash of entry ${e.seq - 1}`);
          if (!keyring.verify(e.kid, e.hash, e.signature))
            return bad("BAD_SIGNATURE", `entry ${e.seq}: signature does not verify under key ${e.kid}`);
          const leaf = leafHash(e.hash);
          if (!row.leaf || !leaf.equals(row.leaf))
            return bad("TREE_MISMATCH", `entry ${e.seq} is not the leaf the Merkle tree recorded`);
          stack.push({ level: 0, index: e.seq - 1, hash: leaf });
          while (stack.length >= 2) {
            const right = stack[stack.length - 1];
            const left = stack[stack.length - 2];
            if (left.level !== right.level || left.index % 2 !== 0 || right.index !== left.index + 1) break;
            stack.splice(-2, 2, {
              level: left.level + 1,
              index: left.index / 2,
              hash: nodeHash(left.hash, right.hash),
            });
            rebuilt.push({ ...stack[stack.length - 1], seq: e.seq });
          }
          checked++;
          expectedPrev = e.hash;
          expectedSeq++;
        }
        const stored = await nodeFetcher(em, tenantId)(rebuilt);
        const wrong = rebuilt.find((n) => !stored.get(`${n.level}:${n.index}`)?.equals(n.hash));
        if (wrong) {
          const first = wrong.index * 2 ** wrong.level + 1;
          return report({
            valid: false,
            eventsChecked: checked,
            firstBadSeq: wrong.seq,
            problem: "TREE_MISMATCH",
            detail: `the Merkle tree's node over entries ${first}–${wrong.seq} does not match them`,
          });
        }
      }
      if (expectedSeq <= end) {
        return report({
          valid: false,
          eventsChecked: checked,
          firstBadSeq: expectedSeq,
          problem: "MISSING_SEQ",
          detail: `entry ${expectedSeq} is missing`,
        });
      }
      return report({ valid: true, eventsChecked: checked, firstBadSeq: 0, detail: `${checked} entries verified` });
    },

    /**
     * Entries after `afterSeq` (undefined: from now) in seq order, then live ones; a
     * keep-alive every `keepAliveMs` while nothing matches. Commits are in seq order
     * (the head lock), so reading `seq > cursor` never skips an entry.
     */
    async *tail(
      tenantId: string,
      opts: { afterSeq?: number; filters: AuditFilters; keepAliveMs: number },
      signal: AbortSignal,
    ): AsyncGenerator<TailItem> {
      let cursor = opts.afterSeq ?? (await headSeq(db.em(), tenantId));
      const matches = (e: AuditEntry) =>
        (!opts.filters.subject || e.subject === opts.filters.subject) &&
        (!opts.filters.typePrefix || e.type.startsWith(opts.filters.typePrefix));
      let idleSince = Date.now();
      while (!signal.aborted) {
        const rows = await sql<Row>(
          db,
          `select ${COLUMNS} from audit_events where tenant_id = $1 and seq > $2 order by seq limit 500`,
          [tenantId, cursor],
        );
        for (const row of rows) {
          const e = toEntry(row);
          cursor = e.seq;
          if (matches(e)) {
            idleSince = Date.now();
            yield { event: e };
          }
        }
        if (rows.length === 500) continue;
        const wait = opts.keepAliveMs - (Date.now() - idleSince);
        if (wait <= 0) {
          idleSince = Date.now();
          yield { keepAlive: cursor };
          continue;
        }
        await feed.waitFor(tenantId, cursor, wait, signal);
      }
    },

    async checkpoint(tenantId: string): Promise<SignedCheckpoint> {
      const em = db.em();
      const size = await headSeq(em, tenantId);
      const root = size === 0 ? EMPTY_ROOT : await computeWithTree(em, tenantId, (node) => rootHash(size, node));
      const signTime = clock.now();
      const signedText = checkpointText(tenantId, size, root, signTime);
      const { kid, signature } = signingKeys.sign(Buffer.from(signedText));
      return { tenantId, treeSize: size, rootHash: root, signTime, kid, signature, signedText };
    },

    async inclusion(tenantId: string, seq: number, treeSize: number) {
      const em = db.em();
      const head = await headSeq(em, tenantId);
      const size = treeSize === 0 ? head : treeSize;
      if (size > head) throw invalidArgument("tree_size", `the log has ${head} entries`, "OUT_OF_RANGE");
      if (seq > size) throw invalidArgument("seq", `must be at most the tree size (${size})`, "OUT_OF_RANGE");
      const hashes = await computeWithTree(em, tenantId, (node) => inclusionProof(seq - 1, size, node));
      const [row] = await sql<{ hash: Buffer }>(em, `select hash from audit_events where tenant_id = $1 and seq = $2`, [
        tenantId,
        seq,
      ]);
      return { leafIndex: seq - 1, treeSize: size, entryHash: row?.hash ?? Buffer.alloc(0), hashes };
    },

    async consistency(tenantId: string, oldSize: number, newSize: number) {
      const em = db.em();
      const head = await headSeq(em, tenantId);
      const size = newSize === 0 ? head : newSize;
      if (size > head) throw invalidArgument("new_size", `the log has ${head} entries`, "OUT_OF_RANGE");
      if (oldSize > size) throw invalidArgument("old_size", `must be at most new_size (${size})`, "OUT_OF_RANGE");
      const hashes = await computeWithTree(em, tenantId, (node) => consistencyProof(oldSize, size, node));
      return { oldSize, newSize: size, hashes };
    },

    /**
     * The documented retention job, inside the caller's transaction: removes entries
     * 1..throughSeq of a tenant's log (or every entry that occurred before `olderThan`),
     * keeping a signed record of where it cut (and the Merkle tree, so proofs and
     * checkpoints still cover the whole history). The cut itself is an audit entry.
     */
    async prune(
      em: EntityManager,
      tenantId: string,
      actor: string,
      what: { throughSeq: number } | { olderThan: Date },
    ): Promise<{ removed: number; throughSeq: number }> {
      let throughSeq: number;
      if ("throughSeq" in what) {
        throughSeq = what.throughSeq;
      } else {
        const [row] = await sql<{ seq: string | null }>(
          em,
          `select max(seq) as seq from audit_events where tenant_id = $1 and occurred_at < $2`,
          [tenantId, what.olderThan],
        );
        if (row.seq === null) return { removed: 0, throughSeq: 0 };
        throughSeq = Number(row.seq);
      }
      const [entry] = await sql<{ hash: Buffer }>(
        em,
        `select hash from audit_events where tenant_id = $1 and seq = $2`,
        [tenantId, throughSeq],
      );
      if (!entry)
        throw failedPrecondition(
          "NOTHING_TO_CUT",
          `entry ${throughSeq} is not in the log (already cut, or not written yet)`,
          { field: "through_seq" },
        );
      const cutAt = clock.now();
      const { kid, signature } = signingKeys.sign(Buffer.from(cutText(tenantId, throughSeq, entry.hash, cutAt)));
      await sql(
        em,
        `insert into audit_cuts (tenant_id, seq, hash, cut_at, kid, signature) values ($1, $2, $3, $4, $5, $6)`,
        [tenantId, throughSeq, entry.hash, cutAt, kid, signature],
      );
      await sql(em, `set local licensd.audit_retention = 'on'`);
      const removed = await affectedRows(em, `delete from audit_events where tenant_id = $1 and seq <= $2`, [
        tenantId,
        throughSeq,
      ]);
      await sql(em, `set local licensd.audit_retention = 'off'`);
      await events.emit(em, {
        tenantId,
        type: "audit.retention.cut",
        subject: tenantId,
        actor,
        payload: { through_seq: throughSeq, removed },
      });
      return { removed, throughSeq };
    },
  };
}

export type AuditService = ReturnType<typeof createAuditService>;
