import { Migration } from "@mikro-orm/migrations";

/**
 * Webhook endpoints (their secrets sealed under the data key), the dispatcher's position in
 * each tenant's audit log, and the deliveries with their attempts.
 */
export class Migration20261206000000Webhooks extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table webhook_endpoints (
        id text primary key,
        tenant_id text not null,
        url text not null,
        description text not null,
        event_types text[] not null,
        enabled boolean not null,
        disabled_reason text check (disabled_reason in ('manual', 'gone', 'failing')),
        secret_sealed bytea not null,
        previous_secret_sealed bytea,
        previous_secret_expires_at timestamptz,
        failing_since timestamptz,
        after_seq bigint not null,
        created_at timestamptz not null,
        updated_at timestamptz not null
      )`);
    this.addSql(`create index webhook_endpoints_tenant on webhook_endpoints (tenant_id, id)`);
    this.addSql(`create table webhook_cursors (tenant_id text primary key, seq bigint not null)`);
    this.addSql(`
      create table webhook_deliveries (
        id text primary key,
        tenant_id text not null,
        endpoint_id text not null references webhook_endpoints (id) on delete cascade,
        event_id text not null,
        event_seq bigint not null,
        event_type text not null,
        payload text not null,
        status text not null check (status in ('pending', 'succeeded', 'failed')),
        attempt_count integer not null default 0,
        scheduled_attempts integer not null default 0,
        next_attempt_at timestamptz,
        test boolean not null default false,
        created_at timestamptz not null,
        updated_at timestamptz not null,
        unique (endpoint_id, event_id)
      )`);
    this.addSql(`create index webhook_deliveries_due on webhook_deliveries (next_attempt_at) where status = 'pending'`);
    this.addSql(`create index webhook_deliveries_tenant on webhook_deliveries (tenant_id, id desc)`);
    this.addSql(`create index webhook_deliveries_endpoint on webhook_deliveries (endpoint_id, id desc)`);
    this.addSql(
      `create index webhook_deliveries_finished on webhook_deliveries (updated_at) where status <> 'pending'`,
    );
    this.addSql(`
      create table webhook_attempts (
        delivery_id text not null references webhook_deliveries (id) on delete cascade,
        number integer not null,
        started_at timestamptz not null,
        http_status integer not null,
        latency_ms integer not null,
        response_body text not null,
        error text not null,
        error_reason text not null,
        manual boolean not null,
        primary key (delivery_id, number)
      )`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table webhook_attempts`);
    this.addSql(`drop table webhook_deliveries`);
    this.addSql(`drop table webhook_cursors`);
    this.addSql(`drop table webhook_endpoints`);
  }
}
