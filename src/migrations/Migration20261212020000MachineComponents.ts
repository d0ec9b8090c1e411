import { Migration } from "@mikro-orm/migrations";

/**
 * Machine components (issue 27): the hardware components (name, fingerprint) a machine registers when it is
 * activated, and the policy settings that check them on validation (component_matching_strategy,
 * require_components_scope). The defaults are the behaviour before. Additive: the previous release neither reads the
 * table nor the columns.
 */
export class Migration20261212020000MachineComponents extends Migration {
  override async up(): Promise<void> {
    // Tables the running instances use: give up at once rather than make a request wait or deadlock (migrate.ts).
    this.addSql(`set local lock_timeout = '200ms'`);
    this.addSql(`
      alter table policies
        add column component_matching_strategy text not null default 'match_any',
        add column require_components_scope boolean not null default false`);
    this.addSql(`
      create table machine_components (
        machine_id text not null references machines (id) on delete cascade,
        name text not null,
        tenant_id text not null references tenants (id),
        fingerprint text not null,
        created_at timestamptz not null,
        primary key (machine_id, name)
      )`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table machine_components`);
    this.addSql(`alter table policies drop column component_matching_strategy, drop column require_components_scope`);
  }
}
