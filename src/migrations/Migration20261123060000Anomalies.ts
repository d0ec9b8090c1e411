import { Migration } from "@mikro-orm/migrations";

/** Anomalies: one row per license, metric and UTC day whose value is far from its baseline. */
export class Migration20261123060000Anomalies extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table anomalies (
        id text primary key,
        tenant_id text not null references tenants (id),
        license_id text not null,
        metric text not null,
        day timestamptz not null,
        value bigint not null,
        mean double precision not null,
        stddev double precision not null,
        z_score double precision not null,
        severity text not null,
        resolved boolean not null default false,
        resolver text not null default '',
        resolution_note text not null default '',
        resolved_at timestamptz,
        created_at timestamptz not null,
        unique (license_id, metric, day)
      )`);
    this.addSql(`create index anomalies_tenant_idx on anomalies (tenant_id, id desc)`);
    this.addSql(
      `create index audit_events_activation_idx on audit_events (occurred_at) where type = 'machine.activated'`,
    );
  }

  override async down(): Promise<void> {
    this.addSql(`drop index audit_events_activation_idx`);
    this.addSql(`drop table anomalies`);
  }
}
