import type { AuditFeed } from "../events/audit-feed.js";
import type { EventLog } from "../events/event-log.js";
import type { Logger } from "../platform/logger.js";

/** What ends a live lease, by audit event type. */
const REVOKING: Record<string, { reason: string; message: string }> = {
  "license.suspended": { reason: "LICENSE_SUSPENDED", message: "the license was suspended" },
  "license.revoked": { reason: "LICENSE_REVOKED", message: "the license was revoked" },
  "license.deleted": { reason: "LICENSE_DELETED", message: "the license was deleted" },
  "machine.deactivated": { reason: "MACHINE_DEACTIVATED", message: "the machine was deactivated" },
  "machine.deleted": { reason: "MACHINE_DELETED", message: "the machine was deleted" },
  "machine.heartbeat.dead": { reason: "HEARTBEAT_DEAD", message: "the machine missed its heartbeat deadline" },
  "process.killed": { reason: "PROCESS_KILLED", message: "the stream's process was killed or missed its heartbeat" },
};

export type Revoke = (reason: string, message: string) => void;

interface TenantWatch {
  /** The last audit seq read for this tenant. */
  seq: number;
  /** Watchers by subject (license id or machine id). */
  bySubject: Map<string, Set<Revoke>>;
  count: number;
  running: boolean;
  again: boolean;
}

/**
 * Push revocation for ConnectLease streams. Every change that ends a lease writes an
 * audit entry, and every instance hears every entry (AuditFeed's LISTEN). For tenants
 * with open streams the hub reads the entries past the last one it read, in order,
 * and calls the watchers of each entry's subject. Reading the log, not trusting the
 * notification's payload, means a dropped LISTEN connection loses nothing: on
 * reconnect the hub simply reads on from where it was.
 */
export class LeaseHub {
  private readonly tenants = new Map<string, TenantWatch>();

  constructor(
    private readonly log: EventLog,
    feed: AuditFeed,
    private readonly logger: Logger,
  ) {
    feed.onEntry((tenantId) => this.catchUp(tenantId));
    feed.onReconnect(() => {
      for (const tenantId of this.tenants.keys()) this.catchUp(tenantId);
    });
  }

  /** Open streams. */
  get size(): number {
    let n = 0;
    for (const t of this.tenants.values()) n += t.count;
    return n;
  }

  /**
   * Calls `revoke` when an entry about any of `subjects` ends the lease. Resolves once the
   * watch is in place — check the license after that, so no change falls between the two.
   * Returns the function that stops watching.
   */
  async watch(tenantId: string, subjects: string[], revoke: Revoke): Promise<() => void> {
    let t = this.tenants.get(tenantId);
    if (!t) {
      const head = await this.log.head(tenantId);
      t = this.tenants.get(tenantId); // another stream of the tenant may have won the race
      if (!t) {
        t = { seq: head, bySubject: new Map(), count: 0, running: false, again: false };
        this.tenants.set(tenantId, t);
      }
    }
    const watch = t;
    for (const s of subjects) {
      let set = watch.bySubject.get(s);
      if (!set) {
        set = new Set();
        watch.bySubject.set(s, set);
      }
      set.add(revoke);
    }
    watch.count++;
    let stopped = false;
    return () => {
      if (stopped) return;
      stopped = true;
      for (const s of subjects) {
        const set = watch.bySubject.get(s);
        set?.delete(revoke);
        if (set?.size === 0) watch.bySubject.delete(s);
      }
      if (--watch.count === 0 && this.tenants.get(tenantId) === watch) this.tenants.delete(tenantId);
    };
  }

  /** Reads the tenant's new entries; one reader per tenant at a time, re-run if more arrived meanwhile. */
  private catchUp(tenantId: string) {
    const t = this.tenants.get(tenantId);
    if (!t) return;
    if (t.running) {
      t.again = true;
      return;
    }
    t.running = true;
    const run = async () => {
      do {
        t.again = false;
        for (;;) {
          const rows = await this.log.entriesAfter(tenantId, t.seq, 1000);
          for (const r of rows) {
            t.seq = r.seq;
            const what = REVOKING[r.type];
            const watchers = what && t.bySubject.get(r.subject);
            if (watchers) for (const revoke of [...watchers]) revoke(what.reason, what.message);
          }
          if (rows.length < 1000) break;
        }
      } while (t.again);
    };
    run().then(
      () => {
        t.running = false;
      },
      (err: unknown) => {
        t.running = false;
        this.logger.warn({ err, tenantId }, "lease hub could not read the audit log; retrying in 1 s");
        setTimeout(() => this.catchUp(tenantId), 1000).unref();
      },
    );
  }
}
