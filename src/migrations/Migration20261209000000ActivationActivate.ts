import { Migration } from "@mikro-orm/migrations";

/**
 * Activate's fast path in one round trip whatever the machine (activation/machine-stamp.ts): first what an agent
 * restarting needs — stamp its machine if it is alive and its license active and unexpired, taking no license lock —
 * and only when there is no such machine, activation_add_machine (migration ActivationAddMachine: the license locked,
 * the machine inserted if a seat is free, its audit entry queued). Returns one row with the license: `stamped` the
 * machine it stamped, or null when it inserted one; no row, having changed nothing, otherwise. Before, a first
 * activation paid two statements: the stamp, which found nothing, then the add.
 *
 * Additive: the previous release never calls it.
 */
export class Migration20261209000000ActivationActivate extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create function activation_activate(p_key_digest bytea, p_now timestamptz, p_id text, p_fingerprint text,
          p_hostname text, p_platform text, p_cores integer, p_ip text, p_metadata jsonb,
          p_event_id text, p_event_payload jsonb)
        returns table (stamped machines, license licenses)
        language plpgsql volatile as $$
      begin
        -- What the agent says of itself replaces what was kept; empty and 0 keep it (as the full path does).
        return query update machines m set last_heartbeat_at = p_now, updated_at = p_now,
            hostname = coalesce(nullif(p_hostname, ''), m.hostname),
            platform = coalesce(nullif(p_platform, ''), m.platform),
            cores = case when p_cores <> 0 then p_cores else m.cores end, ip = p_ip
          from licenses l
          where l.key_digest = p_key_digest and m.license_id = l.id and m.fingerprint = p_fingerprint
            and m.status = 'alive' and l.status = 'active' and (l.expires_at is null or l.expires_at > p_now)
          returning m, l;
        if found then
          return;
        end if;
        return query select null::machines, a from activation_add_machine(p_key_digest, p_now, p_id, p_fingerprint,
          p_hostname, p_platform, p_cores, p_ip, p_metadata, p_event_id, p_event_payload) a;
      end $$`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop function activation_activate`);
  }
}
