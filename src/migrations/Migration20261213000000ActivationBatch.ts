import { Migration } from "@mikro-orm/migrations";

/**
 * Activate's fast path for many activations in one statement (activation/machine-stamp.ts, ActivateBatcher): a
 * process's concurrent Activate calls share one round trip and one commit instead of paying one each (BENCHMARKS.md,
 * "Audited writes"). Element by element it does what activation_activate (migration ActivationActivate) does for one,
 * and answers one row per element it activated, numbered by its place in the arrays (`ord`, from 1); an element it
 * leaves alone has no row and changed nothing (the caller's full path answers it).
 *
 * The order of its locks is what keeps two batches, or a batch and the full path, from deadlocking: first every license
 * the batch names, by key digest, then machines (by key digest and fingerprint), as the full path takes a license's
 * lock before its machines'. (Locking only first activations' licenses, and stamping restarts with no license lock as
 * activation_activate does, deadlocked: 2 times in 40 rounds of 10 racing activations of one fingerprint on two
 * instances.) So a restart takes its license's lock too, shared with the rest of its batch. First activations come
 * first: every element whose license has no alive machine of that fingerprint is activation_add_machine's; then every
 * element not added is stamped if its machine is alive (an agent restarting, or a second element of the batch for a
 * machine an earlier one added).
 *
 * Additive: the previous release never calls it.
 */
export class Migration20261213000000ActivationBatch extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create function activation_activate_batch(p_digests bytea[], p_nows timestamptz[], p_ids text[],
          p_fingerprints text[], p_hostnames text[], p_platforms text[], p_cores integer[], p_ips text[],
          p_metadata jsonb[], p_event_ids text[], p_event_payloads jsonb[])
        returns table (ord integer, stamped machines, license licenses)
        language plpgsql volatile as $$
      declare
        i integer;
        todo integer[];
        added integer[] := '{}';
        lic licenses;
      begin
        -- Every license of the batch locked first, in key-digest order, restarts' too: then two batches, or a batch
        -- and the full path (license, then its machines), take their locks in one order and never deadlock.
        perform 1 from licenses l where l.key_digest = any(p_digests) order by l.key_digest for update;
        select array_agg(g order by p_digests[g], p_fingerprints[g], g) into todo
          from generate_subscripts(p_digests, 1) g;
        foreach i in array coalesce(todo, '{}') loop
          continue when exists (select from machines m join licenses l on l.id = m.license_id
            where l.key_digest = p_digests[i] and m.fingerprint = p_fingerprints[i] and m.status = 'alive');
          select * into lic from activation_add_machine(p_digests[i], p_nows[i], p_ids[i], p_fingerprints[i],
            p_hostnames[i], p_platforms[i], p_cores[i], p_ips[i], p_metadata[i], p_event_ids[i], p_event_payloads[i]);
          if found then
            added := added || i;
            ord := i;
            stamped := null;
            license := lic;
            return next;
          end if;
        end loop;
        foreach i in array coalesce(todo, '{}') loop
          continue when i = any(added);
          -- What the agent says of itself replaces what was kept; empty and 0 keep it (as the full path does).
          return query update machines m set last_heartbeat_at = p_nows[i], updated_at = p_nows[i],
              hostname = coalesce(nullif(p_hostnames[i], ''), m.hostname),
              platform = coalesce(nullif(p_platforms[i], ''), m.platform),
              cores = case when p_cores[i] <> 0 then p_cores[i] else m.cores end, ip = p_ips[i]
            from licenses l
            where l.key_digest = p_digests[i] and m.license_id = l.id and m.fingerprint = p_fingerprints[i]
              and m.status = 'alive' and l.status = 'active' and (l.expires_at is null or l.expires_at > p_nows[i])
            returning i, m, l;
        end loop;
      end $$`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop function activation_activate_batch`);
  }
}
