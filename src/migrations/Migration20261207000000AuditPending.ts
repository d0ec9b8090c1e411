import { Migration } from "@mikro-orm/migrations";

/**
 * Entries waiting to be sequenced. A change writes its entry here, in its own transaction and without a lock; the
 * sequencer (events/sequencer.ts) gives queued entries their seq, hash, signature and tree nodes in batches right
 * after commit, moving them to audit_events. `pid` orders a tenant's queue: an entry whose change committed before
 * another began has the lower pid, so the log keeps the order of causally ordered changes.
 *
 * Additive: the previous release never reads it, and its appends (which lock audit_heads) interleave correctly with
 * the sequencer's (which locks the same row).
 */
export class Migration20261207000000AuditPending extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table audit_pending (
        pid bigint generated always as identity primary key,
        tenant_id text not null,
        id text not null,
        type text not null,
        subject text not null,
        actor text not null,
        payload jsonb not null,
        occurred_at timestamptz not null
      )`);
    this.addSql(`create index audit_pending_tenant_idx on audit_pending (tenant_id, pid)`);
    // How a change made by one statement of its own (no transaction around it) queues its entry in that statement:
    // the statement calls this (e.g. activation_add_machine), then its caller settles the tenant (events.queuedBy).
    this.addSql(`
      create function audit_queue(p_tenant text, p_id text, p_type text, p_subject text, p_actor text,
          p_payload jsonb, p_occurred_at timestamptz)
        returns void language sql volatile as $$
        insert into audit_pending (tenant_id, id, type, subject, actor, payload, occurred_at)
          values (p_tenant, p_id, p_type, p_subject, p_actor, p_payload, p_occurred_at)
      $$`);
    // One round trip for what a sequencer does first: lock the tenant's head (creating it before the first entry;
    // with skip_locked, nothing when another transaction holds it), then read its queue. Each statement of a
    // volatile function takes its own snapshot, so the queue is read after the lock: it shows what the previous
    // holder deleted.
    this.addSql(`
      create function audit_lock_head(p_tenant text, p_skip_locked boolean, p_limit integer)
        returns table (head_seq bigint, head_hash bytea, head_frontier bytea, queued jsonb)
        language plpgsql volatile as $$
      declare
        h record;
      begin
        for attempt in 1..2 loop
          if p_skip_locked then
            select a.seq, a.hash, a.frontier into h from audit_heads a where a.tenant_id = p_tenant
              for update skip locked;
          else
            select a.seq, a.hash, a.frontier into h from audit_heads a where a.tenant_id = p_tenant for update;
          end if;
          exit when found;
          if attempt = 2 then
            return;
          end if;
          insert into audit_heads as a (tenant_id, seq, hash, frontier)
            values (p_tenant, 0, decode(repeat('00', 32), 'hex'), '\\x')
            on conflict do nothing
            returning a.seq, a.hash, a.frontier into h;
          exit when found;
        end loop;
        return query
          select h.seq, h.hash, h.frontier, coalesce(jsonb_agg(jsonb_build_object(
                   'pid', q.pid, 'id', q.id, 'type', q.type, 'subject', q.subject, 'actor', q.actor,
                   'payload', q.payload, 'occurred_ms', (extract(epoch from q.occurred_at) * 1000)::bigint)
                   order by q.pid), '[]'::jsonb)
            from (select * from audit_pending p where p.tenant_id = p_tenant order by p.pid limit p_limit) q;
      end $$`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop function audit_lock_head`);
    this.addSql(`drop function audit_queue`);
    this.addSql(`drop table audit_pending`);
  }
}
