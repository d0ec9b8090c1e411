import { Migration } from "@mikro-orm/migrations";

/**
 * Provisioning from payments (src/provisioning/): the tenants' inbound payment sources (a Stripe or Polar webhook
 * endpoint each, its signing secret sealed under the data key, its price/product → policy mappings), every verified
 * event once by its provider id with what provisioning made of it, the provider references (subscription, order,
 * payment ids) that tie later events to the license a purchase created, and the e-mails that deliver license keys
 * (an outbox: the key sealed under the data key until it is sent) with each tenant's template.
 */
export class Migration20261210000000Payments extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table payment_sources (
        id text primary key,
        tenant_id text not null,
        provider text not null check (provider in ('stripe', 'polar')),
        description text not null,
        mappings jsonb not null,
        enabled boolean not null,
        email_license_keys boolean not null,
        secret_sealed bytea not null,
        previous_secret_sealed bytea,
        previous_secret_expires_at timestamptz,
        created_at timestamptz not null,
        updated_at timestamptz not null
      )`);
    this.addSql(`create index payment_sources_tenant on payment_sources (tenant_id, id)`);
    this.addSql(`
      create table payment_events (
        id text primary key,
        tenant_id text not null,
        source_id text not null references payment_sources (id) on delete cascade,
        provider_event_id text not null,
        type text not null,
        occurred_at timestamptz not null,
        action jsonb not null,
        status text not null check (status in ('applied', 'ignored', 'failed')),
        reason text not null,
        license_ids text[] not null,
        attempts integer not null,
        received_at timestamptz not null,
        updated_at timestamptz not null,
        unique (source_id, provider_event_id)
      )`);
    this.addSql(`create index payment_events_tenant on payment_events (tenant_id, id desc)`);
    this.addSql(`create index payment_events_failed on payment_events (tenant_id, id desc) where status = 'failed'`);
    this.addSql(`
      create table payment_links (
        source_id text not null references payment_sources (id) on delete cascade,
        ref text not null,
        tenant_id text not null,
        license_id text not null,
        suspended_by_payment boolean not null default false,
        created_at timestamptz not null,
        primary key (source_id, ref, license_id)
      )`);
    this.addSql(`create index payment_links_license on payment_links (license_id)`);
    this.addSql(`
      create table email_outbox (
        id text primary key,
        tenant_id text not null,
        license_id text not null,
        payment_event_id text,
        to_address text not null,
        to_name text not null,
        vars jsonb not null,
        key_sealed bytea,
        attachment jsonb,
        status text not null check (status in ('pending', 'sent', 'failed')),
        attempts integer not null,
        next_attempt_at timestamptz,
        last_error text not null,
        sent_at timestamptz,
        created_at timestamptz not null,
        updated_at timestamptz not null
      )`);
    this.addSql(`create index email_outbox_due on email_outbox (next_attempt_at) where status = 'pending'`);
    this.addSql(`create index email_outbox_tenant on email_outbox (tenant_id, id desc)`);
    this.addSql(`
      create table email_templates (
        tenant_id text primary key,
        subject text not null,
        text_body text not null,
        html_body text not null,
        updated_at timestamptz not null
      )`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table email_templates`);
    this.addSql(`drop table email_outbox`);
    this.addSql(`drop table payment_links`);
    this.addSql(`drop table payment_events`);
    this.addSql(`drop table payment_sources`);
  }
}
