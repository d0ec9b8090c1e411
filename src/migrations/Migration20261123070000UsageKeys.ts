import { Migration } from "@mikro-orm/migrations";

/**
 * Cheaper deduplication keys, written once per ingested event: compared byte by byte
 * (collation "C": keys are opaque, and a linguistic collation costs every B-tree
 * comparison a strcoll), and aged out through a BRIN index on received_at (keys arrive
 * in time order; a B-tree on it was a second full index insert per event).
 */
export class Migration20261123070000UsageKeys extends Migration {
  override async up(): Promise<void> {
    this.addSql(
      `alter table usage_dedupe
         alter column tenant_id type text collate "C",
         alter column idempotency_key type text collate "C"`,
    );
    this.addSql(`drop index usage_dedupe_age_idx`);
    this.addSql(`create index usage_dedupe_age_idx on usage_dedupe using brin (received_at)`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop index usage_dedupe_age_idx`);
    this.addSql(`create index usage_dedupe_age_idx on usage_dedupe (received_at)`);
    this.addSql(
      `alter table usage_dedupe
         alter column tenant_id type text collate "default",
         alter column idempotency_key type text collate "default"`,
    );
  }
}
