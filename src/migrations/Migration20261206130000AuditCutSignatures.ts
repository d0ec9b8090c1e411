import { Migration } from "@mikro-orm/migrations";

/**
 * More signatures of a retention cut: a signing-key rotation signs every tenant's latest cut again with the new key,
 * so a chain that starts at a cut still verifies once the key that made the cut is retired (or withdrawn after a leak).
 * Append-only like audit_cuts (additive: the previous release never reads it).
 */
export class Migration20261206130000AuditCutSignatures extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table audit_cut_signatures (
        tenant_id text not null,
        seq bigint not null,
        kid text not null,
        signature bytea not null,
        signed_at timestamptz not null,
        primary key (tenant_id, seq, kid)
      )`);
    this.addSql(
      `create trigger audit_cut_signatures_append_only before update or delete on audit_cut_signatures
         for each row execute function audit_append_only()`,
    );
    this.addSql(
      `create trigger audit_cut_signatures_no_truncate before truncate on audit_cut_signatures
         for each statement execute function audit_append_only()`,
    );
  }

  override async down(): Promise<void> {
    this.addSql(`drop table audit_cut_signatures`);
  }
}
