import { Migration } from "@mikro-orm/migrations";

/** Heartbeat monitoring (dead machines, culling, resurrection), offline activation, rate-limit buckets. */
export class Migration20261123040000Heartbeats extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      alter table policies
        add column heartbeat_grace_seconds bigint not null default 0,
        add column heartbeat_cull_strategy text not null default 'deactivate_dead',
        add column heartbeat_resurrection_seconds bigint,
        add column offline_lease_ttl_seconds bigint,
        add column require_fingerprint_scope boolean not null default false`);
    this.addSql(`
      alter table machines
        add column status text not null default 'alive',
        add column dead_at timestamptz,
        add column offline boolean not null default false`);
    // The heartbeat worker's scans: alive machines by age, dead ones by time of death.
    this.addSql(
      `create index machines_alive_heartbeat_idx on machines (last_heartbeat_at)
         where status = 'alive' and not offline`,
    );
    this.addSql(`create index machines_dead_idx on machines (dead_at) where status = 'dead'`);
    // Token buckets shared by every instance (activation rate limits).
    this.addSql(`
      create table rate_buckets (
        key text primary key,
        tokens double precision not null,
        granted boolean not null,
        refilled_at timestamptz not null
      )`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table rate_buckets`);
    this.addSql(`alter table machines drop column status, drop column dead_at, drop column offline`);
    this.addSql(`
      alter table policies drop column heartbeat_grace_seconds, drop column heartbeat_cull_strategy,
        drop column heartbeat_resurrection_seconds, drop column offline_lease_ttl_seconds,
        drop column require_fingerprint_scope`);
  }
}
