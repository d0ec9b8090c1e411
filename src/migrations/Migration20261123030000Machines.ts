import { Migration } from "@mikro-orm/migrations";

/** Machines: the seats of licenses. */
export class Migration20261123030000Machines extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table machines (
        id text primary key,
        tenant_id text not null references tenants (id),
        license_id text not null references licenses (id) on delete cascade,
        fingerprint text not null,
        hostname text not null default '',
        platform text not null default '',
        cores integer not null default 0,
        ip text not null default '',
        metadata jsonb not null default '{}',
        last_heartbeat_at timestamptz not null,
        created_at timestamptz not null,
        updated_at timestamptz not null,
        unique (license_id, fingerprint)
      )`);
    this.addSql(`create index machines_tenant_idx on machines (tenant_id, id)`);
    this.addSql(`create index machines_license_idx on machines (tenant_id, license_id, id)`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table machines`);
  }
}
