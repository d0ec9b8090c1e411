import canonicalize from "canonicalize";
import type { Clock } from "../platform/clock.js";
import { sha256 } from "../platform/crypto.js";
import { sql, type EntityManager } from "../platform/db.js";
import { newId } from "../platform/ids.js";
import { appendLeaf, leafHash } from "./merkle.js";
import type { AuditKeyring } from "./audit-keyring.js";

/** The channel every committed audit entry is announced on (payload `tenant_id:seq`). */
export const AUDIT_CHANNEL = "licensd_audit";

export const GENESIS_HASH = Buffer.alloc(32);

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** A state change, as a service reports it. */
export interface DomainEvent {
  tenantId: string;
  /** e.g. `tenant.created`, `tenant.api_key.revoked`, `license.suspended`. */
  type: string;
  /** The resource id the change is about. */
  subject: string;
  /** `super_admin`, `key:<id>`, `license:<id>`, `system`. */
  actor: string;
  payload: { [key: string]: JsonValue };
}

/** The fields an entry's hash covers. */
export interface EntryFields {
  tenantId: string;
  seq: number;
  id: string;
  type: string;
  subject: string;
  actor: string;
  payload: unknown;
  occurredAt: Date;
  prevHash: Uint8Array;
}

/** SHA-256 over the RFC 8785 canonical JSON of the entry's fields (documented in the proto). */
export function entryHash(e: EntryFields): Buffer {
  const canonical = canonicalize({
    tenant_id: e.tenantId,
    seq: e.seq,
    id: e.id,
    type: e.type,
    subject: e.subject,
    actor: e.actor,
    payload: e.payload,
    occurred_at: e.occurredAt.toISOString(),
    prev_hash: Buffer.from(e.prevHash).toString("hex"),
  });
  return sha256(canonical!);
}

export interface Events {
  /**
   * Appends the event to its tenant's audit log inside the caller's transaction: the
   * entry, its Merkle leaf and the new chain head commit or roll back with the change
   * itself, and a NOTIFY announces it at commit.
   */
  emit(em: EntityManager, event: DomainEvent): Promise<{ id: string; seq: number }>;
}

interface Head {
  seq: string;
  hash: Buffer;
  frontier: Buffer;
}

/**
 * `committed`, when given, is told of each entry with the transaction it was written in:
 * the server registers it to run after that commit, so this process's caches drop what the
 * change touched before its caller hears back (other instances learn it by NOTIFY).
 */
export function createEvents({
  clock,
  keyring,
  committed,
}: {
  clock: Clock;
  keyring: AuditKeyring;
  committed?: (em: EntityManager, tenantId: string, seq: number) => void;
}): Events {
  return {
    async emit(em, event) {
      // The hot path of every mutation: plain SQL, two round trips (lock the head, then
      // one statement that writes everything).
      const lockHead = () =>
        sql<Head>(em, `select seq, hash, frontier from audit_heads where tenant_id = $1 for update`, [event.tenantId]);
      let [head] = await lockHead();
      if (!head) {
        await sql(
          em,
          `insert into audit_heads (tenant_id, seq, hash, frontier) values ($1, 0, $2, '\\x') on conflict do nothing`,
          [event.tenantId, GENESIS_HASH],
        );
        [head] = await lockHead();
      }
      const seq = Number(head.seq) + 1;
      const id = newId("evt");
      const occurredAt = clock.now();
      const fields: EntryFields = { ...event, seq, id, occurredAt, prevHash: head.hash };
      const hash = entryHash(fields);
      const { kid, signature } = keyring.sign(hash);
      const frontier: Buffer[] = [];
      for (let i = 0; i < head.frontier.length; i += 32) frontier.push(head.frontier.subarray(i, i + 32));
      const tree = appendLeaf(frontier, seq - 1, leafHash(hash));

      // Nodes' parameters follow the 18 fixed ones.
      const nodeValues = tree.completed
        .map((_, i) => `($${19 + 4 * i}, $${20 + 4 * i}, $${21 + 4 * i}, $${22 + 4 * i})`)
        .join(", ");
      await sql(
        em,
        `with entry as (
           insert into audit_events
             (tenant_id, seq, id, type, subject, actor, payload, occurred_at, prev_hash, hash, kid, signature)
           values ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12)
         ), nodes as (
           insert into audit_tree_nodes (tenant_id, level, index, hash) values ${nodeValues}
         ), head as (
           update audit_heads set seq = $13, hash = $14, frontier = $15 where tenant_id = $16
         )
         select pg_notify($17, $18)`,
        [
          event.tenantId,
          seq,
          id,
          event.type,
          event.subject,
          event.actor,
          JSON.stringify(event.payload),
          occurredAt,
          head.hash,
          hash,
          kid,
          signature,
          seq,
          hash,
          Buffer.concat(tree.frontier),
          event.tenantId,
          AUDIT_CHANNEL,
          `${event.tenantId}:${seq}`,
          ...tree.completed.flatMap((n) => [event.tenantId, n.level, n.index, n.hash]),
        ],
      );
      committed?.(em, event.tenantId, seq);
      return { id, seq };
    },
  };
}
