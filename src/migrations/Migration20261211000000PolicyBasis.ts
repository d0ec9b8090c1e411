import { Migration } from "@mikro-orm/migrations";

/**
 * Basis strategies (issue 27): when a license's expiry starts, when a machine's heartbeats are required, what a
 * renewal extends, whether a transfer resets the expiry. The defaults are the behaviour before. A license whose expiry
 * waits for its first activation, validation or use has `expiry_pending` (and no expires_at) until then; a machine's
 * first heartbeat is kept for HEARTBEAT_BASIS_FROM_FIRST_HEARTBEAT. Activate's fast path leaves a license whose
 * expiry has not started to the full path, which starts it.
 *
 * Additive for the previous release, except activation_add_machine, which now refuses (to the full path) licenses
 * with expiry_pending: the previous release never has any.
 */
export class Migration20261211000000PolicyBasis extends Migration {
  override async up(): Promise<void> {
    // Tables the running instances use: give up at once rather than make a request wait or deadlock (migrate.ts).
    this.addSql(`set local lock_timeout = '200ms'`);
    this.addSql(`
      alter table policies
        add column expiration_basis text not null default 'from_creation',
        add column heartbeat_basis text not null default 'from_activation',
        add column renewal_basis text not null default 'from_now_if_expired',
        add column transfer_strategy text not null default 'keep_expiry'`);
    this.addSql(`alter table licenses add column expiry_pending boolean not null default false`);
    this.addSql(`alter table machines add column first_heartbeat_at timestamptz`);
    this.addSql(addMachine("and not l.expiry_pending"));
  }

  override async down(): Promise<void> {
    this.addSql(addMachine(""));
    this.addSql(`alter table machines drop column first_heartbeat_at`);
    this.addSql(`alter table licenses drop column expiry_pending`);
    this.addSql(`
      alter table policies drop column expiration_basis, drop column heartbeat_basis, drop column renewal_basis,
        drop column transfer_strategy`);
  }
}

/** Migration ActivationAddMachine's function, with `extra` added to the license's conditions. */
function addMachine(extra: string) {
  return `
      create or replace function activation_add_machine(p_key_digest bytea, p_now timestamptz, p_id text,
          p_fingerprint text, p_hostname text, p_platform text, p_cores integer, p_ip text, p_metadata jsonb,
          p_event_id text, p_event_payload jsonb)
        returns setof licenses
        language plpgsql volatile as $$
      declare
        lic licenses;
        seats integer;
      begin
        select * into lic from licenses l
          where l.key_digest = p_key_digest and l.status = 'active' and (l.expires_at is null or l.expires_at > p_now)
            ${extra}
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
      end $$`;
}
