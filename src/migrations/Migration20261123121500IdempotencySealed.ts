import { Migration } from "@mikro-orm/migrations";

/**
 * Recorded answers are stored sealed under the data key (`response_sealed`). A migration
 * cannot seal (it has no data key), so the answers recorded in clear are discarded, while
 * their keys stay spent until purged: a retry with one is refused (IDEMPOTENCY_RESPONSE_DISCARDED)
 * instead of running the mutation a second time. The table is rebuilt rather than updated
 * so the clear answers leave the data files with the old table, not as dead tuples.
 */
export class Migration20261123121500IdempotencySealed extends Migration {
  override async up(): Promise<void> {
    this.rebuild(
      `response_sealed bytea`,
      `select scope, procedure, key, request_digest, null, created_at from idempotency_records`,
    );
  }

  override async down(): Promise<void> {
    // The older code reads answers in clear and could not open these: none are kept.
    this.rebuild(
      `response bytea not null`,
      `select scope, procedure, key, request_digest, response_sealed, created_at from idempotency_records where false`,
    );
  }

  /** idempotency_records again, with `responseColumn` filled by `rows` from the old one. */
  private rebuild(responseColumn: string, rows: string) {
    this.addSql(`
      create table idempotency_records_next (
        scope text not null,
        procedure text not null,
        key text not null,
        request_digest bytea not null,
        ${responseColumn},
        created_at timestamptz not null,
        primary key (scope, procedure, key)
      )`);
    this.addSql(`insert into idempotency_records_next ${rows}`);
    this.addSql(`drop table idempotency_records`);
    this.addSql(`alter table idempotency_records_next rename to idempotency_records`);
    this.addSql(
      `alter table idempotency_records rename constraint idempotency_records_next_pkey to idempotency_records_pkey`,
    );
    this.addSql(`create index idempotency_records_created_at_idx on idempotency_records (created_at)`);
  }
}
