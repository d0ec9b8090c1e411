import { Migration } from "@mikro-orm/migrations";

/**
 * The audit log: per-tenant chain heads, append-only entries, the Merkle tree's perfect
 * subtrees, retention cuts; and the Ed25519 signing keys that sign checkpoints (and,
 * later, leases and license files).
 */
export class Migration20261123010000Audit extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table signing_keys (
        kid text primary key,
        algorithm text not null,
        public_key bytea not null,
        private_key_sealed bytea not null,
        status text not null check (status in ('active', 'retiring', 'retired')),
        not_before timestamptz not null,
        not_after timestamptz,
        created_at timestamptz not null
      )`);
    this.addSql(`create unique index signing_keys_one_active on signing_keys ((true)) where status = 'active'`);

    // One row per tenant: the chain head, locked FOR UPDATE by every append, so seqs are
    // gapless and commit in order. frontier = the Merkle tree's right edge, 32-byte hashes concatenated.
    this.addSql(`
      create table audit_heads (
        tenant_id text primary key references tenants (id),
        seq bigint not null,
        hash bytea not null,
        frontier bytea not null
      )`);
    this.addSql(`
      create table audit_events (
        tenant_id text not null,
        seq bigint not null,
        id text not null unique,
        type text not null,
        subject text not null,
        actor text not null,
        payload jsonb not null,
        occurred_at timestamptz not null,
        prev_hash bytea not null,
        hash bytea not null,
        kid text not null,
        signature bytea not null,
        primary key (tenant_id, seq)
      )`);
    this.addSql(`create index audit_events_subject_idx on audit_events (tenant_id, subject, seq)`);
    this.addSql(`create index audit_events_type_idx on audit_events (tenant_id, type text_pattern_ops, seq)`);
    this.addSql(`create index audit_events_time_idx on audit_events (tenant_id, occurred_at)`);
    // Perfect subtrees of each tenant's RFC 6962 tree: (level, index) covers leaves
    // [index·2^level, (index+1)·2^level). About two rows per entry; kept after retention.
    this.addSql(`
      create table audit_tree_nodes (
        tenant_id text not null,
        level smallint not null,
        index bigint not null,
        hash bytea not null,
        primary key (tenant_id, level, index)
      )`);
    // Where retention cut a tenant's log, signed, so verification can start after it.
    this.addSql(`
      create table audit_cuts (
        tenant_id text not null,
        seq bigint not null,
        hash bytea not null,
        cut_at timestamptz not null,
        kid text not null,
        signature bytea not null,
        primary key (tenant_id, seq)
      )`);

    // Append-only at the database level. The retention job alone may delete, and only
    // inside a transaction that set licensd.audit_retention = 'on'.
    this.addSql(`
      create function audit_append_only() returns trigger language plpgsql as $$
      begin
        if tg_op = 'DELETE' and current_setting('licensd.audit_retention', true) = 'on' then
          return old;
        end if;
        raise exception '% is append-only: % refused', tg_table_name, tg_op using errcode = '42501';
      end $$`);
    for (const table of ["audit_events", "audit_tree_nodes", "audit_cuts"]) {
      this.addSql(
        `create trigger ${table}_append_only before update or delete on ${table}
           for each row execute function audit_append_only()`,
      );
      this.addSql(
        `create trigger ${table}_no_truncate before truncate on ${table}
           for each statement execute function audit_append_only()`,
      );
    }
  }

  override async down(): Promise<void> {
    for (const table of ["audit_cuts", "audit_tree_nodes", "audit_events", "audit_heads", "signing_keys"])
      this.addSql(`drop table ${table}`);
    this.addSql(`drop function audit_append_only`);
  }
}
