import { Migration } from "@mikro-orm/migrations";

/** Tenants, their API keys and the idempotency records every mutation may use. */
export class Migration20261123000000Foundation extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table tenants (
        id text primary key,
        name text not null,
        metadata jsonb not null default '{}',
        created_at timestamptz not null,
        updated_at timestamptz not null,
        deleted_at timestamptz
      )`);
    this.addSql(`
      create table api_keys (
        id text primary key,
        tenant_id text not null references tenants (id),
        name text not null,
        secret_digest bytea not null unique,
        prefix text not null,
        scopes text[] not null,
        expires_at timestamptz,
        revoked_at timestamptz,
        created_at timestamptz not null,
        updated_at timestamptz not null
      )`);
    this.addSql(`create index api_keys_tenant_id_idx on api_keys (tenant_id, id)`);
    this.addSql(`
      create table idempotency_records (
        scope text not null,
        procedure text not null,
        key text not null,
        request_digest bytea not null,
        response bytea not null,
        created_at timestamptz not null,
        primary key (scope, procedure, key)
      )`);
    this.addSql(`create index idempotency_records_created_at_idx on idempotency_records (created_at)`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table idempotency_records`);
    this.addSql(`drop table api_keys`);
    this.addSql(`drop table tenants`);
  }
}
