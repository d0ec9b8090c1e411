import { Migration } from "@mikro-orm/migrations";

/** Products, policies, customers and licenses. */
export class Migration20261123020000Licensing extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table products (
        id text primary key,
        tenant_id text not null references tenants (id),
        code text not null,
        name text not null,
        features jsonb not null default '[]',
        metadata jsonb not null default '{}',
        created_at timestamptz not null,
        updated_at timestamptz not null,
        unique (tenant_id, code)
      )`);
    this.addSql(`
      create table policies (
        id text primary key,
        tenant_id text not null references tenants (id),
        product_id text not null references products (id),
        name text not null,
        duration_seconds bigint,
        all_features boolean not null default false,
        entitlements jsonb not null default '[]',
        agent_entitlements jsonb not null default '[]',
        max_machines integer not null default 0,
        max_users integer not null default 0,
        floating boolean not null default false,
        heartbeat_seconds bigint,
        expiration_strategy text not null,
        grace_seconds bigint not null default 0,
        overage_strategy text not null,
        lease_ttl_seconds bigint,
        metadata jsonb not null default '{}',
        created_at timestamptz not null,
        updated_at timestamptz not null,
        unique (product_id, name)
      )`);
    this.addSql(`create index policies_tenant_idx on policies (tenant_id, id)`);
    this.addSql(`
      create table customers (
        id text primary key,
        tenant_id text not null references tenants (id),
        name text not null,
        email text not null,
        organization text not null default '',
        metadata jsonb not null default '{}',
        created_at timestamptz not null,
        updated_at timestamptz not null
      )`);
    this.addSql(`create unique index customers_email_idx on customers (tenant_id, lower(email))`);
    // key_digest is unique across tenants: ValidateLicense finds a license by its key alone.
    this.addSql(`
      create table licenses (
        id text primary key,
        tenant_id text not null references tenants (id),
        product_id text not null references products (id),
        policy_id text not null references policies (id),
        customer_id text not null references customers (id),
        status text not null check (status in ('active', 'suspended', 'revoked')),
        key_digest bytea not null unique,
        key_sealed bytea not null,
        key_prefix text not null,
        expires_at timestamptz,
        entitlement_overrides jsonb not null default '[]',
        agent_overrides jsonb not null default '[]',
        max_machines integer,
        metadata jsonb not null default '{}',
        suspended_at timestamptz,
        revoked_at timestamptz,
        created_at timestamptz not null,
        updated_at timestamptz not null
      )`);
    this.addSql(`create index licenses_tenant_idx on licenses (tenant_id, id)`);
    this.addSql(`create index licenses_product_idx on licenses (tenant_id, product_id, id)`);
    this.addSql(`create index licenses_customer_idx on licenses (tenant_id, customer_id, id)`);
    this.addSql(`create index licenses_expiry_idx on licenses (tenant_id, expires_at)`);
  }

  override async down(): Promise<void> {
    for (const table of ["licenses", "customers", "policies", "products"]) this.addSql(`drop table ${table}`);
  }
}
