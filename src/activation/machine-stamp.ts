import { sql, type Database } from "../platform/db.js";
import type { License, Policy, Product } from "../licensing/licensing.entity.js";
import type { Machine } from "./machine.entity.js";

/*
 * Heartbeat's fast path in one statement: stamp a live machine of an active, unexpired
 * license (by key digest and fingerprint) and return it with its license, policy and
 * product, turned into the plain records the lease is built from. Prepared once per pooled
 * connection: planning this four-table join was most of PostgreSQL's work per heartbeat.
 * Activate's fast path is one statement too (ACTIVATE, below).
 */
/** The license, policy and product columns a lease is built from (`license_id`, `tenant_id` named by the caller). */
const LICENSE_COLUMNS = `l.status as l_status, (extract(epoch from l.expires_at) * 1000)::bigint as l_expires_ms,
         l.product_id, l.policy_id,
         l.entitlement_overrides, l.agent_overrides, l.max_machines as l_max_machines,
         p.name as p_name, p.all_features, p.entitlements, p.agent_entitlements,
         p.max_machines as p_max_machines, p.max_users,
         p.expiration_strategy, p.grace_seconds, p.lease_ttl_seconds, p.offline_lease_ttl_seconds,
         pr.code, pr.name as pr_name, pr.features`;
const RETURNING = `m.id, m.tenant_id, m.license_id, m.fingerprint, m.hostname, m.platform, m.cores, m.ip, m.metadata,
         m.status, m.offline, (extract(epoch from m.created_at) * 1000)::bigint as created_ms,
         ${LICENSE_COLUMNS}`;
const LIVE_MACHINE_OF_USABLE_LICENSE = `from licenses l
     join policies p on p.id = l.policy_id
     join products pr on pr.id = l.product_id
   where l.key_digest = $1 and m.license_id = l.id and m.fingerprint = $2 and m.status = 'alive'
     and l.status = 'active' and (l.expires_at is null or l.expires_at > $3)`;
const HEARTBEAT_STAMP = `update machines m set last_heartbeat_at = $3, updated_at = $3,
    first_heartbeat_at = coalesce(m.first_heartbeat_at, $3)
  ${LIVE_MACHINE_OF_USABLE_LICENSE} returning ${RETURNING}`;

/** A license with its policy and product (LICENSE_COLUMNS). */
interface LicenseRow {
  tenant_id: string;
  license_id: string;
  l_status: License["status"];
  l_expires_ms: string | null;
  product_id: string;
  policy_id: string;
  entitlement_overrides: License["entitlementOverrides"];
  agent_overrides: License["agentOverrides"];
  l_max_machines: number | null;
  p_name: string;
  all_features: boolean;
  entitlements: Policy["entitlements"];
  agent_entitlements: Policy["agentEntitlements"];
  p_max_machines: number;
  max_users: number;
  expiration_strategy: Policy["expirationStrategy"];
  grace_seconds: string;
  lease_ttl_seconds: string | null;
  offline_lease_ttl_seconds: string | null;
  code: string;
  pr_name: string;
  features: Product["features"];
}

interface StampRow extends LicenseRow {
  id: string;
  fingerprint: string;
  hostname: string;
  platform: string;
  cores: number;
  ip: string;
  metadata: Record<string, string>;
  status: string;
  offline: boolean;
  created_ms: string;
}

const ms = (v: string | null) => (v === null ? null : new Date(Number(v)));

/** The plain records a lease is built from, out of LICENSE_COLUMNS. */
function licenseRecordsOf(r: LicenseRow) {
  const license = {
    id: r.license_id,
    tenantId: r.tenant_id,
    productId: r.product_id,
    policyId: r.policy_id,
    status: r.l_status,
    expiresAt: ms(r.l_expires_ms),
    entitlementOverrides: r.entitlement_overrides,
    agentOverrides: r.agent_overrides,
    maxMachines: r.l_max_machines,
  } as License;
  const policy = {
    id: r.policy_id,
    name: r.p_name,
    allFeatures: r.all_features,
    entitlements: r.entitlements,
    agentEntitlements: r.agent_entitlements,
    maxMachines: r.p_max_machines,
    maxUsers: r.max_users,
    expirationStrategy: r.expiration_strategy,
    graceSeconds: Number(r.grace_seconds),
    leaseTtlSeconds: r.lease_ttl_seconds === null ? null : Number(r.lease_ttl_seconds),
    offlineLeaseTtlSeconds: r.offline_lease_ttl_seconds === null ? null : Number(r.offline_lease_ttl_seconds),
  } as Policy;
  const product = { code: r.code, name: r.pr_name, features: r.features } as Product;
  return { license, policy, product };
}

/**
 * Stamps the machine of a license (by key digest) and fingerprint alive at `now` and returns it with everything a lease
 * needs; undefined, having changed nothing, when there is no such machine alive or the license is not active and
 * unexpired (the full path answers those).
 */
export async function stampMachine(db: Database, keyDigest: Buffer, fingerprint: string, now: Date) {
  const [r] = await sql<StampRow>(db, HEARTBEAT_STAMP, [keyDigest, fingerprint, now], { name: "licensd-heartbeat" });
  return r && { ...licenseRecordsOf(r), machine: machineOf(r, now) };
}

/** The machine a stamp returned, as stamped at `now`. */
function machineOf(r: StampRow, now: Date): Machine {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    licenseId: r.license_id,
    fingerprint: r.fingerprint,
    hostname: r.hostname,
    platform: r.platform,
    cores: r.cores,
    ip: r.ip,
    metadata: r.metadata,
    lastHeartbeatAt: now,
    status: "alive",
    deadAt: null,
    offline: r.offline,
    createdAt: new Date(Number(r.created_ms)),
    updatedAt: now,
  } as Machine;
}

/**
 * Activate's fast path, one autocommit statement for every activation of a batch (migration ActivationBatch): with the
 * batch's licenses locked (in one order, so batches never deadlock), each element stamps the live machine of an active,
 * unexpired license (an agent restarting), or inserts a machine the license has never had if a seat is free and queues
 * its audit entry. Each row
 * gives back the element's place (`ord`, from 1), its license joined here with its policy and product, and the machine
 * it stamped (its columns null when it inserted one). Prepared once per pooled connection.
 */
const ACTIVATE_BATCH = `select a.ord, m.id, m.fingerprint, m.hostname, m.platform, m.cores, m.ip, m.metadata, m.status,
         m.offline, (extract(epoch from m.created_at) * 1000)::bigint as created_ms, l.id as license_id, l.tenant_id,
         ${LICENSE_COLUMNS}
   from activation_activate_batch($1::bytea[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
          $7::integer[], $8::text[], $9::jsonb[], $10::text[], $11::jsonb[]) a
     cross join lateral (select (a.license).*) l
     cross join lateral (select (a.stamped).*) m
     join policies p on p.id = l.policy_id
     join products pr on pr.id = l.product_id`;

/** One activation: the key's digest, the machine as the agent describes it, its `machine.activated` entry. */
interface Activation {
  keyDigest: Buffer;
  m: { id: string; now: Date } & Pick<Machine, "fingerprint" | "hostname" | "platform" | "cores" | "ip" | "metadata">;
  event: { id: string; payload: Record<string, unknown> };
}

type Activated = ReturnType<typeof licenseRecordsOf> & ({ added: true } | { added: false; stamped: Machine });

/** The outcome of `a` in a row ACTIVATE_BATCH gave. */
function activatedOf(r: StampRow | (LicenseRow & { id: null }), a: Activation): Activated {
  const records = licenseRecordsOf(r);
  return r.id === null
    ? { ...records, added: true as const }
    : { ...records, added: false as const, stamped: machineOf(r, a.m.now) };
}

/** Runs ACTIVATE_BATCH for `batch`: each element's outcome, in order; undefined for one it left alone. */
async function activateBatch(db: Database, batch: readonly Activation[]): Promise<(Activated | undefined)[]> {
  const rows = await sql<(StampRow | (LicenseRow & { id: null })) & { ord: number }>(
    db,
    ACTIVATE_BATCH,
    [
      batch.map((a) => a.keyDigest),
      batch.map((a) => a.m.now),
      batch.map((a) => a.m.id),
      batch.map((a) => a.m.fingerprint),
      batch.map((a) => a.m.hostname),
      batch.map((a) => a.m.platform),
      batch.map((a) => a.m.cores),
      batch.map((a) => a.m.ip),
      batch.map((a) => JSON.stringify(a.m.metadata)),
      batch.map((a) => a.event.id),
      batch.map((a) => JSON.stringify(a.event.payload)),
    ],
    { name: "licensd-activate-batch" },
  );
  const out: (Activated | undefined)[] = batch.map(() => undefined);
  for (const r of rows) out[r.ord - 1] = activatedOf(r, batch[r.ord - 1]!);
  return out;
}

/** At most this many activations share a statement. */
const MAX_BATCH = 64;
/** At most this many batch statements of one process run at once. */
const MAX_IN_FLIGHT = 2;

/**
 * Group commit for Activate's fast path: an activation asked while this process's statements are all in flight waits
 * for the next, which carries every activation that waited (up to MAX_BATCH). One alone goes at once, so an idle
 * server adds no wait; under load, concurrent first activations share a round trip, a commit and PostgreSQL's work per
 * statement, which were most of their cost (BENCHMARKS.md, "Audited writes"). Each element commits or not with its
 * statement, as it would alone; a batch that fails (a deadlock with another transaction, say) is run again one
 * element per statement, so one element's error is its own.
 */
class ActivateBatcher {
  private readonly waiting: {
    a: Activation;
    resolve: (v: Activated | undefined) => void;
    reject: (e: unknown) => void;
  }[] = [];
  private inFlight = 0;

  constructor(private readonly db: Database) {}

  activate(a: Activation): Promise<Activated | undefined> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ a, resolve, reject });
      this.pump();
    });
  }

  private pump() {
    while (this.inFlight < MAX_IN_FLIGHT && this.waiting.length > 0) {
      const batch = this.waiting.splice(0, MAX_BATCH);
      this.inFlight++;
      void this.run(batch).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private async run(batch: ActivateBatcher["waiting"]) {
    try {
      const out = await activateBatch(
        this.db,
        batch.map((w) => w.a),
      );
      for (const [i, w] of batch.entries()) w.resolve(out[i]);
    } catch (err) {
      if (batch.length === 1) return batch[0]!.reject(err);
      await Promise.all(
        batch.map((w) =>
          activateBatch(this.db, [w.a]).then(
            ([one]) => w.resolve(one),
            (e: unknown) => w.reject(e),
          ),
        ),
      );
    }
  }
}

const batchers = new WeakMap<Database, ActivateBatcher>();

/**
 * Activates a machine on the license a key digest names, if the license is active and unexpired at `now`, in one
 * statement committed on return (shared with the process's other activations at that moment: ActivateBatcher). A live
 * machine with that fingerprint is stamped with what the agent says of itself (`stamped`: that machine). Otherwise a
 * new, alive machine `m` is inserted unless the license has no free seat (node-locked: one) or a machine with that
 * fingerprint (dead), and the machine.activated entry `event` is queued (its payload completed with the license's id):
 * `added` (the caller then settles the tenant's log: events.queuedBy). Both come with the license, its policy and
 * product; undefined, having changed nothing, for anything else.
 */
export function activateMachine(
  db: Database,
  keyDigest: Buffer,
  m: Activation["m"],
  event: Activation["event"],
): Promise<Activated | undefined> {
  let batcher = batchers.get(db);
  if (!batcher) {
    batcher = new ActivateBatcher(db);
    batchers.set(db, batcher);
  }
  return batcher.activate({ keyDigest, m, event });
}
