import { sql, type Database } from "../platform/db.js";
import type { License, Policy, Product } from "../licensing/licensing.entity.js";
import type { Machine } from "./machine.entity.js";

/*
 * Heartbeat's and Activate's fast path in one statement: stamp a live machine of an
 * active, unexpired license (by key digest and fingerprint) and return it with its license,
 * policy and product, turned into the plain records the lease is built from. Prepared
 * once per pooled connection: planning this four-table join was most of PostgreSQL's work
 * per heartbeat.
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
const HEARTBEAT_STAMP = `update machines m set last_heartbeat_at = $3, updated_at = $3
  ${LIVE_MACHINE_OF_USABLE_LICENSE} returning ${RETURNING}`;
/**
 * Activate of a machine already active (an agent restarting): what it tells of itself, as the full path keeps it (empty
 * and 0 keep what was there).
 */
const ACTIVATE_STAMP = `update machines m set last_heartbeat_at = $3, updated_at = $3,
         hostname = coalesce(nullif($4, ''), m.hostname), platform = coalesce(nullif($5, ''), m.platform),
         cores = case when $6::int <> 0 then $6::int else m.cores end, ip = $7
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
 * Stamps the machine of a license (by key digest) and fingerprint alive at `now` — with
 * `seen`, also what an Activate says of it — and returns it with everything a lease needs;
 * undefined, having changed nothing, when there is no such machine alive or the license is
 * not active and unexpired (the full path answers those).
 */
export async function stampMachine(
  db: Database,
  keyDigest: Buffer,
  fingerprint: string,
  now: Date,
  seen?: { hostname: string; platform: string; cores: number; ip: string },
) {
  const [r] = seen
    ? await sql<StampRow>(
        db,
        ACTIVATE_STAMP,
        [keyDigest, fingerprint, now, seen.hostname, seen.platform, seen.cores, seen.ip],
        {
          name: "licensd-activate-again",
        },
      )
    : await sql<StampRow>(db, HEARTBEAT_STAMP, [keyDigest, fingerprint, now], { name: "licensd-heartbeat" });
  if (!r) return undefined;
  const machine = {
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
  return { ...licenseRecordsOf(r), machine };
}

/**
 * Activate's fast path for a new machine, one autocommit statement: migration ActivationAddMachine's function locks the
 * license, inserts the machine if a seat is free and queues its audit entry, and gives back the locked row, joined
 * here with its policy and product. Prepared once per pooled connection.
 */
const ADD_MACHINE = `select l.id as license_id, l.tenant_id, ${LICENSE_COLUMNS}
   from activation_add_machine($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11::jsonb) l
     join policies p on p.id = l.policy_id
     join products pr on pr.id = l.product_id`;

/**
 * Locks the license a key digest names if it is active and unexpired at `now`, then inserts a new, alive machine of it
 * (`id`, what it says of itself) unless the license has no free seat (node-locked: one) or a machine with that
 * fingerprint, and queues the machine.activated entry `event` (its payload completed with the license's id): one
 * statement, committed on return. Returns the license with its policy and product when it inserted the machine (the
 * caller then settles the tenant's log: events.queuedBy); undefined, having changed nothing, otherwise.
 */
export async function addNewMachine(
  db: Database,
  keyDigest: Buffer,
  m: { id: string; now: Date } & Pick<Machine, "fingerprint" | "hostname" | "platform" | "cores" | "ip" | "metadata">,
  event: { id: string; payload: Record<string, unknown> },
) {
  const [r] = await sql<LicenseRow>(
    db,
    ADD_MACHINE,
    [
      keyDigest,
      m.now,
      m.id,
      m.fingerprint,
      m.hostname,
      m.platform,
      m.cores,
      m.ip,
      JSON.stringify(m.metadata),
      event.id,
      JSON.stringify(event.payload),
    ],
    { name: "licensd-activate-new" },
  );
  return r && licenseRecordsOf(r);
}
