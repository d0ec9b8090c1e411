import { Migration } from "@mikro-orm/migrations";

/**
 * Activate's fast path for a new machine (activation/machine-stamp.ts) in one round trip: lock the usable license a
 * key digest names, then insert the machine if a seat is free. Each statement of a volatile function takes its own
 * snapshot, so the seats are counted after the lock: the count shows the machines the lock's previous holders
 * committed (one plain statement's snapshot would predate its wait for the lock). When it inserts the machine it also
 * queues the machine.activated audit entry (audit_queue), so the whole change is one autocommit statement, and
 * returns the locked license; otherwise it changes nothing and returns nothing (no such usable license, no seat,
 * node-locked elsewhere, a machine with the fingerprint already), which leaves the answer to the full path.
 *
 * Additive: the previous release never calls it.
 */
export class Migration20261208000000ActivationAddMachine extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create function activation_add_machine(p_key_digest bytea, p_now timestamptz, p_id text, p_fingerprint text,
          p_hostname text, p_platform text, p_cores integer, p_ip text, p_metadata jsonb,
          p_event_id text, p_event_payload jsonb)
        returns setof licenses
        language plpgsql volatile as $$
      declare
        lic licenses;
        seats integer;
      begin
        select * into lic from licenses l
          where l.key_digest = p_key_digest and l.status = 'active' and (l.expires_at is null or l.expires_at > p_now)
          for update;
        if not found then
          return;
        end if;
        -- A node-locked license has one seat whatever its limit says; 0 is no limit.
        select case when p.floating then coalesce(lic.max_machines, p.max_machines) else 1 end into seats
          from policies p where p.id = lic.policy_id;
        insert into machines (id, tenant_id, license_id, fingerprint, hostname, platform, cores, ip, metadata,
            last_heartbeat_at, status, dead_at, offline, created_at, updated_at)
          select p_id, lic.tenant_id, lic.id, p_fingerprint, p_hostname, p_platform, p_cores, p_ip, p_metadata,
              p_now, 'alive', null, false, p_now, p_now
            where seats = 0 or (select count(*) from machines m where m.license_id = lic.id) < seats
          on conflict (license_id, fingerprint) do nothing;
        if found then
          -- The machine.activated entry, queued in this same statement (migration AuditPending); the license's id
          -- completes the payload the caller built.
          perform audit_queue(lic.tenant_id, p_event_id, 'machine.activated', p_id, 'license:' || lic.id,
            p_event_payload || jsonb_build_object('license_id', lic.id), p_now);
          return next lic;
        end if;
      end $$`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop function activation_add_machine`);
  }
}
