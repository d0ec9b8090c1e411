import { Migration } from "@mikro-orm/migrations";

/**
 * License users (ValidateLicenseRequest.user) and the policy setting that requires one.
 * Additive: the previous release neither reads the table nor the column.
 */
export class Migration20261211010000LicenseUsers extends Migration {
  override async up(): Promise<void> {
    // Tables the running instances use: give up at once rather than make a request wait or deadlock (migrate.ts).
    this.addSql(`set local lock_timeout = '200ms'`);
    this.addSql(`alter table policies add column require_user_scope boolean not null default false`);
    this.addSql(`
      create table license_users (
        id text primary key,
        tenant_id text not null references tenants (id),
        license_id text not null references licenses (id) on delete cascade,
        identity text not null,
        name text not null default '',
        metadata jsonb not null default '{}',
        created_at timestamptz not null,
        updated_at timestamptz not null,
        unique (license_id, identity)
      )`);
    this.addSql(`create index license_users_license_idx on license_users (tenant_id, license_id, id)`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table license_users`);
    this.addSql(`alter table policies drop column require_user_scope`);
  }
}
