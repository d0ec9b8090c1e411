import { Migration } from "@mikro-orm/migrations";

/**
 * The keys licensd derives from the data key (audit HMAC dk1, license-key HMAC v0, page tokens), stored sealed under
 * it so that they survive a data-key rotation (platform/data-key-material.ts). The first start fills the table; a
 * migration cannot, having no data key.
 */
export class Migration20261206120000DataKeyMaterial extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table data_key_material (
        name text primary key,
        sealed bytea not null,
        created_at timestamptz not null
      )`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table data_key_material`);
  }
}
