import { Migration } from "@mikro-orm/migrations";

/**
 * Deduplication keys name their tenant by a small number instead of its text id. Every
 * usage event inserts one key, and the key's B-tree compared and stored the ~30-byte
 * tenant id in front of every idempotency key; with an int4 first, PostgreSQL also reads
 * the key column at a fixed offset. Inserting 500 keys cost 28% less PostgreSQL CPU
 * (1.4 ms instead of 1.96; interleaved batches, one backend), and rows and WAL are smaller.
 * Tenants are only ever soft-deleted, so a tenant keeps its number.
 */
export class Migration20261123110000UsageDedupeTenantSeq extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table tenants add column seq integer generated always as identity`);
    this.addSql(`alter table tenants add constraint tenants_seq_key unique (seq)`);
    this.rebuild(
      `tenant_seq integer`,
      `select t.seq, d.idempotency_key, d.received_at from usage_dedupe d join tenants t on t.id = d.tenant_id`,
    );
  }

  override async down(): Promise<void> {
    this.rebuild(
      `tenant_id text collate "C"`,
      `select t.id, d.idempotency_key, d.received_at from usage_dedupe d join tenants t on t.seq = d.tenant_seq`,
    );
    this.addSql(`alter table tenants drop column seq`);
  }

  /**
   * usage_dedupe again, its tenant column (the first of its key) as `tenantColumn`, filled by `rows` from the old one.
   */
  private rebuild(tenantColumn: string, rows: string) {
    const tenant = tenantColumn.split(" ")[0];
    this.addSql(`
      create table usage_dedupe_next (
        ${tenantColumn} not null,
        idempotency_key text collate "C" not null,
        received_at timestamptz not null,
        primary key (${tenant}, idempotency_key)
      )`);
    this.addSql(`insert into usage_dedupe_next ${rows}`);
    this.addSql(`drop table usage_dedupe`);
    this.addSql(`alter table usage_dedupe_next rename to usage_dedupe`);
    // "usage_dedupe_pkey": ingestion recognises a resent key by its constraint's name
    this.addSql(`alter table usage_dedupe rename constraint usage_dedupe_next_pkey to usage_dedupe_pkey`);
    this.addSql(`create index usage_dedupe_age_idx on usage_dedupe using brin (received_at)`);
  }
}
