import { sql, type Database, type EntityManager } from "../platform/db.js";
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

/*
 * Activate's fast path for a new machine takes two statements in one transaction, as the full path does: the license
 * row is locked first, and the seats are counted by a later statement, whose snapshot sees every machine committed by
 * the transactions that held the lock before (one statement's snapshot predates its wait for the lock).
 */
const LOCK_USABLE_LICENSE = `select l.id as license_id, l.tenant_id, p.floating, ${LICENSE_COLUMNS}
   from licenses l
     join policies p on p.id = l.policy_id
     join products pr on pr.id = l.product_id
   where l.key_digest = $1 and l.status = 'active' and (l.expires_at is null or l.expires_at > $2)
   for update of l`;
/** Inserts the machine if the license has fewer than $14 machines (0: no limit) and none with its fingerprint. */
const INSERT_WITHIN_SEATS = `insert into machines
     (id, tenant_id, license_id, fingerprint, hostname, platform, cores, ip, metadata, last_heartbeat_at,
      status, dead_at, offline, created_at, updated_at)
   select $1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $10, $10
   where $14::int = 0 or (select count(*) from machines where license_id = $3) < $14::int
   on conflict (license_id, fingerprint) do nothing
   returning id`;

/**
 * In `em`'s transaction: locks the license a key digest names if it is active and unexpired at `now`, and returns it
 * with its policy, product and whether it floats; undefined, having locked nothing, for any other license.
 */
export async function lockUsableLicense(em: EntityManager, keyDigest: Buffer, now: Date) {
  const [r] = await sql<LicenseRow & { floating: boolean }>(em, LOCK_USABLE_LICENSE, [keyDigest, now]);
  return r && { ...licenseRecordsOf(r), floating: r.floating };
}

/**
 * In `em`'s transaction, under the license's lock: inserts `machine` unless its license already has `seats` machines
 * (0: no limit) or one with its fingerprint. Says whether it did.
 */
export async function insertWithinSeats(em: EntityManager, machine: Machine, seats: number): Promise<boolean> {
  const m = machine;
  const inserted = await sql(em, INSERT_WITHIN_SEATS, [
    m.id,
    m.tenantId,
    m.licenseId,
    m.fingerprint,
    m.hostname,
    m.platform,
    m.cores,
    m.ip,
    JSON.stringify(m.metadata),
    m.createdAt,
    m.status,
    m.deadAt,
    m.offline,
    seats,
  ]);
  return inserted.length === 1;
}
