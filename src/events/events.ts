import type { Clock } from "../platform/clock.js";
import { sql, type EntityManager } from "../platform/db.js";
import { newId } from "../platform/ids.js";
import type { AuditKeyring } from "./audit-keyring.js";
import type { JsonValue } from "./entry.js";
import { sequence, type AuditSequencer } from "./sequencer.js";

export { AUDIT_CHANNEL, entryHash, GENESIS_HASH, type EntryFields, type JsonValue } from "./entry.js";

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

export interface Events {
  /**
   * Appends the event to its tenant's audit log with the caller's transaction; the entry
   * commits or rolls back with the change. When no other transaction holds the tenant's
   * head, the entry is sequenced at once, in the caller's transaction (which then holds the
   * head until it ends); when one does, the entry is queued without waiting, and sequenced
   * with the other queued ones right after the commit, before `db.tx` returns (sequencer.ts).
   */
  emit(em: EntityManager, event: DomainEvent): Promise<{ id: string }>;
  /**
   * Appends the event now, in the caller's transaction, and says its seq: waits for the
   * tenant's head. For the rare change that records its own place in the log (a webhook
   * endpoint starts after its creation's entry).
   */
  emitSequenced(em: EntityManager, event: DomainEvent): Promise<{ id: string; seq: number }>;
  /**
   * For a change made by one autocommit statement of its own, which queued its entry itself with the SQL function
   * `audit_queue` (migration AuditPending; e.g. Activate's new-machine path): called once that statement has returned,
   * sequences the tenant's queue and tells this process, as `emit` does after a commit. Never rejects (the change is
   * committed; a failure leaves the entry queued for the sweep).
   */
  queuedBy(tenantId: string): Promise<void>;
  /**
   * `queuedBy` for a change whose answer need not wait for its entry's place in the log (Activate's fast path):
   * tells this process at once (its caches drop what the change touched, as after any commit) and has the tenant's
   * queue sequenced in the background within a few ms (sequencer.settleSoon), whose NOTIFY tells tails and webhooks.
   * Readers of the log through the API settle the tenant first (audit.rpc.ts), so they still read the change's entry;
   * a failure leaves it queued for the sweep (docs/audit.md, Sequencing).
   */
  queuedSoon(tenantId: string): void;
  /**
   * Resolves once every entry queued before the call has its place in the log: the tenant's, or every tenant's without
   * one. For a reader of `audit_events` that must count changes that have answered (anomaly detection's activations,
   * after `queuedSoon`). Never rejects: a failure leaves the entries to the sweep.
   */
  settle(tenantId?: string): Promise<void>;
}

/**
 * `afterCommit` runs a hook once `em`'s transaction has committed, and `db.tx` awaits it
 * (platform/db.ts): a queued entry's settle, then `sequenced`, which the server uses to tell
 * this process's caches and tails of the new entries before the caller hears back (other
 * instances hear the sequencer's NOTIFY).
 */
export function createEvents({
  clock,
  keyring,
  sequencer,
  afterCommit,
  sequenced,
}: {
  clock: Clock;
  keyring: AuditKeyring;
  sequencer: AuditSequencer;
  afterCommit: (em: EntityManager, hook: () => Promise<void>) => void;
  sequenced?: (tenantId: string) => void;
}): Events {
  const committed = async (tenantId: string, settle: boolean) => {
    try {
      if (settle) await sequencer.settle(tenantId);
    } catch {
      // Logged by the sequencer; the entry stays queued for the next sweep, and the change did commit.
    } finally {
      // Even when settling failed, the change committed: caches must drop what it touched.
      sequenced?.(tenantId);
    }
  };
  const announceAfterCommit = (em: EntityManager, tenantId: string, settle: boolean) =>
    afterCommit(em, () => committed(tenantId, settle));
  // The entry as the log stores it: its payload as jsonb gives it back (queued entries are hashed as read back).
  const entryOf = (event: DomainEvent) => ({
    pid: null,
    id: newId("evt"),
    type: event.type,
    subject: event.subject,
    actor: event.actor,
    payload: JSON.parse(JSON.stringify(event.payload)) as unknown,
    occurredAt: clock.now(),
  });
  return {
    async emit(em, event) {
      const own = entryOf(event);
      const now = sequencer.contended(event.tenantId)
        ? undefined
        : await sequence(em, keyring, event.tenantId, { limit: null, own, skipLocked: true });
      if (now) {
        announceAfterCommit(em, event.tenantId, false);
        return { id: own.id };
      }
      await sql(
        em,
        `insert into audit_pending (tenant_id, id, type, subject, actor, payload, occurred_at)
         values ($1, $2, $3, $4, $5, $6::jsonb, $7)`,
        [event.tenantId, own.id, own.type, own.subject, own.actor, JSON.stringify(own.payload), own.occurredAt],
      );
      announceAfterCommit(em, event.tenantId, true);
      return { id: own.id };
    },
    async emitSequenced(em, event) {
      const own = entryOf(event);
      const { seq } = (await sequence(em, keyring, event.tenantId, { limit: null, own }))!;
      announceAfterCommit(em, event.tenantId, false);
      return { id: own.id, seq };
    },
    queuedBy: (tenantId) => committed(tenantId, true),
    queuedSoon(tenantId) {
      sequenced?.(tenantId);
      sequencer.settleSoon(tenantId);
    },
    settle: (tenantId) => (tenantId ? sequencer.settle(tenantId) : sequencer.sweep()).catch(() => undefined),
  };
}
