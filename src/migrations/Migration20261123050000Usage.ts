import { Migration } from "@mikro-orm/migrations";

/**
 * Usage metering: meters; raw events partitioned by month of event time (partitions are
 * created ahead by the usage worker, and on demand by ingestion); deduplication keys;
 * hourly rollups and distinct values (summaries never scan raw events); per-period
 * totals, locked while a batch checks its limits.
 */
export class Migration20261123050000Usage extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table meters (
        id text primary key,
        tenant_id text not null references tenants (id),
        product_id text not null references products (id),
        metric text not null,
        aggregation text not null,
        unique_attribute text not null default '',
        period text not null,
        description text not null default '',
        created_at timestamptz not null,
        updated_at timestamptz not null,
        unique (product_id, metric)
      )`);
    this.addSql(`create index meters_tenant_idx on meters (tenant_id, id)`);
    this.addSql(`
      create table usage_events (
        tenant_id text not null,
        license_id text not null,
        meter_id text not null,
        ts timestamptz not null,
        quantity bigint not null,
        idempotency_key text not null,
        agent_id text not null,
        attributes jsonb not null,
        received_at timestamptz not null
      ) partition by range (ts)`);
    this.addSql(`create index usage_events_license_idx on usage_events (license_id, ts desc)`);
    this.addSql(`
      create table usage_dedupe (
        tenant_id text not null,
        idempotency_key text not null,
        received_at timestamptz not null,
        primary key (tenant_id, idempotency_key)
      )`);
    this.addSql(`create index usage_dedupe_age_idx on usage_dedupe (received_at)`);
    this.addSql(`
      create table usage_rollups (
        tenant_id text not null,
        license_id text not null,
        meter_id text not null,
        hour timestamptz not null,
        agent_id text not null,
        total numeric not null,
        events bigint not null,
        max bigint not null,
        min bigint not null,
        latest bigint not null,
        latest_ts timestamptz not null,
        primary key (license_id, meter_id, hour, agent_id)
      )`);
    this.addSql(`create index usage_rollups_meter_idx on usage_rollups (meter_id, hour)`);
    this.addSql(`
      create table usage_unique (
        license_id text not null,
        meter_id text not null,
        hour timestamptz not null,
        agent_id text not null,
        value text not null,
        primary key (license_id, meter_id, hour, agent_id, value)
      )`);
    this.addSql(`
      create table usage_periods (
        tenant_id text not null,
        license_id text not null,
        meter_id text not null,
        period_start timestamptz not null,
        used numeric,
        latest_ts timestamptz,
        warned boolean not null default false,
        exceeded boolean not null default false,
        primary key (license_id, meter_id, period_start)
      )`);
    this.addSql(`
      create table usage_period_unique (
        license_id text not null,
        meter_id text not null,
        period_start timestamptz not null,
        value text not null,
        primary key (license_id, meter_id, period_start, value)
      )`);
  }

  override async down(): Promise<void> {
    for (const t of [
      "usage_period_unique",
      "usage_periods",
      "usage_unique",
      "usage_rollups",
      "usage_dedupe",
      "usage_events",
      "meters",
    ])
      this.addSql(`drop table ${t}`);
  }
}
