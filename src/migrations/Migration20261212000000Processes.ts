import { Migration } from "@mikro-orm/migrations";

/**
 * Processes (issue 27): running instances of an app on an activated machine, at most the policy's max_processes
 * alive at once per machine or per license. A process is alive while its last ping is within its heartbeat duration
 * (kept on the row, copied from the policy at each spawn and ping). Deleting a machine or a license deletes its
 * processes. Additive: the previous release reads neither the table nor the columns; the defaults (0: no limit) keep
 * today's behaviour.
 */
export class Migration20261212000000Processes extends Migration {
  override async up(): Promise<void> {
    // Tables the running instances use: give up at once rather than make a request wait or deadlock (migrate.ts).
    this.addSql(`set local lock_timeout = '200ms'`);
    this.addSql(`
      alter table policies
        add column max_processes integer not null default 0,
        add column process_leasing_strategy text not null default 'per_machine',
        add column process_heartbeat_seconds bigint`);
    this.addSql(`
      create table processes (
        id text primary key,
        tenant_id text not null references tenants (id),
        license_id text not null references licenses (id) on delete cascade,
        machine_id text not null references machines (id) on delete cascade,
        pid text not null,
        metadata jsonb not null default '{}',
        heartbeat_seconds integer not null,
        last_heartbeat_at timestamptz not null,
        created_at timestamptz not null,
        updated_at timestamptz not null,
        unique (machine_id, pid)
      )`);
    this.addSql(`create index processes_tenant_idx on processes (tenant_id, id)`);
    this.addSql(`create index processes_license_idx on processes (license_id, id)`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table processes`);
    this.addSql(`
      alter table policies drop column max_processes, drop column process_leasing_strategy,
        drop column process_heartbeat_seconds`);
  }
}
