import { affectedRows, sql, type EntityManager, type SqlRunner } from "../platform/db.js";
import type { EntryFields } from "./events.js";

/**
 * The statements over the log's tables (audit_events, audit_heads, audit_tree_nodes,
 * audit_cuts) that the audit domain runs to list, verify, prove and prune the log; emit
 * (events.ts) is the one writer of entries. Each function runs on the runner it is given:
 * an EntityManager from `db.tx` runs it in that transaction.
 */

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

/** The signed record of a retention cut: entries 1..seq were removed; `hash` was entry seq's. */
export interface RetentionCut {
  seq: number;
  hash: Buffer;
  cutAt: Date;
  kid: string;
  signature: Buffer;
  /** The cut signed again by later signing keys (at each rotation), oldest first. */
  resigned?: { kid: string; signature: Buffer }[];
}

/** A Merkle tree node's position: `level` 0 holds the leaves, entry seq's leaf at index seq - 1. */
export interface NodeKey {
  level: number;
  index: number;
}

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

function where(tenantId: string, f: AuditFilters, params: unknown[]): string {
  const clauses = [`tenant_id = $${params.push(tenantId)}`];
  if (f.subject) clauses.push(`subject = $${params.push(f.subject)}`);
  if (f.typePrefix) clauses.push(`type like $${params.push(likePrefix(f.typePrefix))}`);
  if (f.actor) clauses.push(`actor = $${params.push(f.actor)}`);
  if (f.start) clauses.push(`occurred_at >= $${params.push(f.start)}`);
  if (f.end) clauses.push(`occurred_at < $${params.push(f.end)}`);
  return clauses.join(" and ");
}

/** The tenant's head seq as audit_heads records it (the seq emit wrote last), 0 before its first entry. */
export async function headSeq(em: SqlRunner, tenantId: string): Promise<number> {
  const [row] = await sql<{ seq: string }>(em, `select seq from audit_heads where tenant_id = $1`, [tenantId]);
  return row ? Number(row.seq) : 0;
}

/** The stored Merkle tree nodes at `keys`, by `level:index`; keys with no node are absent. */
export async function treeNodes(em: SqlRunner, tenantId: string, keys: NodeKey[]): Promise<Map<string, Buffer>> {
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
}

/**
 * One page of the tenant's entries matching `filters`, in seq order (descending when
 * `newestFirst`), after seq `page.after` when given; `page.size + 1` rows at most, so the
 * caller can tell whether another page follows.
 */
export async function listEntries(
  db: SqlRunner,
  tenantId: string,
  filters: AuditFilters,
  page: { after: string | undefined; size: number },
  newestFirst: boolean,
): Promise<AuditEntry[]> {
  const params: unknown[] = [];
  let text = `select ${COLUMNS} from audit_events where ${where(tenantId, filters, params)}`;
  if (page.after !== undefined) text += ` and seq ${newestFirst ? "<" : ">"} $${params.push(page.after)}`;
  text += ` order by seq ${newestFirst ? "desc" : "asc"} limit $${params.push(page.size + 1)}`;
  return (await sql<Row>(db, text, params)).map(toEntry);
}

/** The tenant's entry with this id, undefined when there is none. */
export async function entryById(db: SqlRunner, tenantId: string, id: string): Promise<AuditEntry | undefined> {
  const [row] = await sql<Row>(db, `select ${COLUMNS} from audit_events where tenant_id = $1 and id = $2`, [
    tenantId,
    id,
  ]);
  return row ? toEntry(row) : undefined;
}

/** At most this many entries per `entriesFrom` call. */
export const ENTRIES_PAGE = 500;

/** The tenant's entries with seq > `afterSeq`, oldest first, at most ENTRIES_PAGE. */
export async function entriesFrom(db: SqlRunner, tenantId: string, afterSeq: number): Promise<AuditEntry[]> {
  const rows = await sql<Row>(
    db,
    `select ${COLUMNS} from audit_events where tenant_id = $1 and seq > $2 order by seq limit ${ENTRIES_PAGE}`,
    [tenantId, afterSeq],
  );
  return rows.map(toEntry);
}

/**
 * The chain rows of seq [fromSeq, toSeq], oldest first, at most `limit`: each entry with the
 * leaf the Merkle tree recorded for it (null when the tree has none).
 */
export async function chainRows(
  em: SqlRunner,
  tenantId: string,
  fromSeq: number,
  toSeq: number,
  limit: number,
): Promise<{ entry: AuditEntry; leaf: Buffer | null }[]> {
  const rows = await sql<Row & { leaf: Buffer | null }>(
    em,
    `select ${columns("e.")}, n.hash as leaf
       from audit_events e
       left join audit_tree_nodes n on n.tenant_id = e.tenant_id and n.level = 0 and n.index = e.seq - 1
      where e.tenant_id = $1 and e.seq >= $2 and e.seq <= $3 order by e.seq limit $4`,
    [tenantId, fromSeq, toSeq, limit],
  );
  return rows.map((r) => ({ entry: toEntry(r), leaf: r.leaf }));
}

/** The stored hash of the tenant's entry `seq`, undefined when that entry is not in the log. */
export async function entryHashAt(em: SqlRunner, tenantId: string, seq: number): Promise<Buffer | undefined> {
  const [row] = await sql<{ hash: Buffer }>(em, `select hash from audit_events where tenant_id = $1 and seq = $2`, [
    tenantId,
    seq,
  ]);
  return row?.hash;
}

/** The tenant's latest retention cut, with its later signatures; undefined when its log was never cut. */
export async function latestCut(em: SqlRunner, tenantId: string): Promise<RetentionCut | undefined> {
  const [cut] = await sql<{ seq: string; hash: Buffer; cut_ms: string; kid: string; signature: Buffer }>(
    em,
    `select seq, hash, (extract(epoch from cut_at) * 1000)::bigint as cut_ms, kid, signature
       from audit_cuts where tenant_id = $1 order by seq desc limit 1`,
    [tenantId],
  );
  if (!cut) return undefined;
  const resigned = await sql<{ kid: string; signature: Buffer }>(
    em,
    `select kid, signature from audit_cut_signatures where tenant_id = $1 and seq = $2 order by signed_at, kid`,
    [tenantId, cut.seq],
  );
  return {
    seq: Number(cut.seq),
    hash: cut.hash,
    cutAt: new Date(Number(cut.cut_ms)),
    kid: cut.kid,
    signature: cut.signature,
    resigned,
  };
}

/** Every tenant's latest retention cut (what a signing-key rotation signs again), by tenant. */
export async function latestCuts(em: SqlRunner): Promise<(RetentionCut & { tenantId: string })[]> {
  const rows = await sql<{
    tenant_id: string;
    seq: string;
    hash: Buffer;
    cut_ms: string;
    kid: string;
    signature: Buffer;
  }>(
    em,
    `select distinct on (tenant_id) tenant_id, seq, hash, (extract(epoch from cut_at) * 1000)::bigint as cut_ms, kid,
            signature
       from audit_cuts order by tenant_id, seq desc`,
  );
  return rows.map((r) => ({
    tenantId: r.tenant_id,
    seq: Number(r.seq),
    hash: r.hash,
    cutAt: new Date(Number(r.cut_ms)),
    kid: r.kid,
    signature: r.signature,
  }));
}

/** Records another signature of a cut (idempotent per key). */
export async function addCutSignature(
  em: EntityManager,
  tenantId: string,
  seq: number,
  signed: { kid: string; signature: Buffer },
  at: Date,
): Promise<void> {
  await sql(
    em,
    `insert into audit_cut_signatures (tenant_id, seq, kid, signature, signed_at) values ($1, $2, $3, $4, $5)
     on conflict do nothing`,
    [tenantId, seq, signed.kid, signed.signature, at],
  );
}

/** The seq of the tenant's newest entry that occurred before `before`, null when there is none. */
export async function lastSeqBefore(em: EntityManager, tenantId: string, before: Date): Promise<number | null> {
  const [row] = await sql<{ seq: string | null }>(
    em,
    `select max(seq) as seq from audit_events where tenant_id = $1 and occurred_at < $2`,
    [tenantId, before],
  );
  return row.seq === null ? null : Number(row.seq);
}

/**
 * On `em`'s transaction: records the signed cut, then removes the tenant's entries
 * 1..cut.seq (the table's guard lets deletes through only while licensd.audit_retention is
 * on, for this transaction). Returns how many entries were removed.
 */
export async function cutThrough(em: EntityManager, tenantId: string, cut: RetentionCut): Promise<number> {
  await sql(
    em,
    `insert into audit_cuts (tenant_id, seq, hash, cut_at, kid, signature) values ($1, $2, $3, $4, $5, $6)`,
    [tenantId, cut.seq, cut.hash, cut.cutAt, cut.kid, cut.signature],
  );
  await sql(em, `set local licensd.audit_retention = 'on'`);
  const removed = await affectedRows(em, `delete from audit_events where tenant_id = $1 and seq <= $2`, [
    tenantId,
    cut.seq,
  ]);
  await sql(em, `set local licensd.audit_retention = 'off'`);
  return removed;
}
