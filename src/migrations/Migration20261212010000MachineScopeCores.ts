import { Migration } from "@mikro-orm/migrations";

/**
 * Machine uniqueness scope and core-based seats (issue 27): a policy says where a machine's fingerprint must be unique
 * (its license, the policy, the product or the tenant) and may limit the total CPU cores of a license's machines. The
 * defaults ('license', 0) are the behaviour before. An index on (tenant_id, fingerprint) finds a fingerprint's machines
 * across licenses (activation/machine-uniqueness.ts); migrations run in one transaction, so it is not built
 * concurrently: machines' writes wait for the build (a short one for a table of machines).
 *
 * Activate's one-statement fast path stays as it was for those defaults: activation_add_machine now leaves a license
 * whose policy has a wider scope or a core limit to the full path. The license's select joins its policy (a
 * primary-key read of the row the function reads next for the seats, so in cache), and such a license is not even
 * locked. The full path checks both under the license's row lock and a transaction-level advisory lock on (tenant,
 * fingerprint); done in the function instead, the check would need the same lock and scope queries there, for
 * policies that are a small share of activations (trials, servers) whose new machines are rare. The stamp of an alive
 * machine (activation_activate) is unchanged: it takes no seat and no fingerprint.
 *
 * Additive for the previous release, except activation_add_machine, which now refuses (to the full path) licenses of
 * such policies: the previous release has none.
 */
export class Migration20261212010000MachineScopeCores extends Migration {
  override async up(): Promise<void> {
    // Tables the running instances use: give up at once rather than make a request wait or deadlock (migrate.ts).
    this.addSql(`set local lock_timeout = '200ms'`);
    this.addSql(`
      alter table policies
        add column machine_uniqueness_scope text not null default 'license',
        add column max_cores integer not null default 0`);
    this.addSql(`create index machines_fingerprint_idx on machines (tenant_id, fingerprint)`);
    this.addSql(
      addMachine(
        "join policies p on p.id = l.policy_id",
        "and p.machine_uniqueness_scope = 'license' and p.max_cores = 0",
      ),
    );
  }

  override async down(): Promise<void> {
    this.addSql(addMachine("", ""));
    this.addSql(`drop index machines_fingerprint_idx`);
    this.addSql(`alter table policies drop column machine_uniqueness_scope, drop column max_cores`);
  }
}

/**
 * Migration PolicyBasis's activation_add_machine, the license's select joined with `join` and limited by `extra`
 * (both empty: that migration's function).
 */
function addMachine(join: string, extra: string) {
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
        select l.* into lic from licenses l ${join}
          where l.key_digest = p_key_digest and l.status = 'active' and (l.expires_at is null or l.expires_at > p_now)
            and not l.expiry_pending ${extra}
          for update of l;
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
