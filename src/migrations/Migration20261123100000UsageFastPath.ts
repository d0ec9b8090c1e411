import { Migration } from "@mikro-orm/migrations";

/**
 * Ingestion's one-statement path (ingest-sql.ts, fastStatement) stops itself, rolling the
 * whole statement back, when a batch needs more than adding to period totals: a limit or
 * threshold in reach, a period total not there yet. SQL has no way to raise an error of
 * its own, hence this function; its SQLSTATE (LU001) tells ingestion to take the general path.
 */
export class Migration20261123100000UsageFastPath extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create function licensd_usage_fast_path(ok boolean) returns boolean language plpgsql as $$
      begin
        if ok then
          return true;
        end if;
        raise exception 'usage batch needs the general path' using errcode = 'LU001';
      end $$`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop function licensd_usage_fast_path(boolean)`);
  }
}
