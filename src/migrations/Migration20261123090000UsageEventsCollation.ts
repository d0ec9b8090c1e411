import { Migration } from "@mikro-orm/migrations";

/**
 * usage_events' license index compares ids byte by byte (collation "C"): every event
 * inserts into it, and under a linguistic collation each B-tree comparison is a strcoll.
 * Ids are ASCII, so the order does not change. A collation change on text rewrites no
 * rows; the index is rebuilt.
 */
export class Migration20261123090000UsageEventsCollation extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table usage_events alter column license_id type text collate "C"`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table usage_events alter column license_id type text collate "default"`);
  }
}
