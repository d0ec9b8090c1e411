import { LockMode } from "@mikro-orm/core";
import type { Clock } from "../platform/clock.js";
import { type EntityManager, flushUnique } from "../platform/db.js";
import { alreadyExists, failedPrecondition, invalidArgument, notFound, unauthenticated } from "../platform/errors.js";
import { newId } from "../platform/ids.js";
import type { Page } from "../platform/pagination.js";
import type { SigningKeyStore } from "../platform/signing-keys.js";
import type { Events } from "../events/events.js";
import type { CatalogService } from "../licensing/catalog.service.js";
import { ED25519_PREFIX } from "../licensing/license-file.js";
import { lookupLicenseKey, type LicenseKeyring } from "../licensing/license-key.js";
import { effectiveStatus, planClaims, startExpiry, startsExpiry } from "../licensing/license.service.js";
import { License, type Policy, type Product } from "../licensing/licensing.entity.js";
import type { Database } from "../platform/db.js";
import { Machine, MachineComponent } from "./machine.entity.js";
import type { Component } from "../licensing/license-machines.js";
import { activateMachine, stampMachine } from "./machine-stamp.js";
import { requireCoresFree, requireCoresReported, requireFingerprintFree } from "./machine-uniqueness.js";
import { checkOfflineActivationRequest, parseOfflineActivationRequest } from "./offline-request.js";
import { type DataKeys, open } from "../platform/crypto.js";

/** Vinzy's default lease lifetime. */
export const DEFAULT_LEASE_TTL_SECONDS = 86_400;
/** An air-gapped machine's lease, unless its policy says otherwise. */
export const DEFAULT_OFFLINE_LEASE_TTL_SECONDS = 365 * 86_400;
/** How old an offline activation request may be when it is uploaded. */
const OFFLINE_REQUEST_MAX_AGE_MS = 90 * 86_400_000;

/**
 * When a license stops running on existing machines (expiry + grace, unless its strategy keeps access); null for never.
 */
export function runsUntil(
  license: Pick<License, "expiresAt">,
  policy: Pick<Policy, "expirationStrategy" | "graceSeconds">,
): Date | null {
  if (
    !license.expiresAt ||
    policy.expirationStrategy === "allow_access" ||
    policy.expirationStrategy === "maintain_access"
  )
    return null;
  return new Date(license.expiresAt.getTime() + policy.graceSeconds * 1000);
}

export interface MachineInfo {
  fingerprint: string;
  hostname: string;
  platform: string;
  cores: number;
  ip: string;
  metadata: Record<string, string>;
}

export interface SignedLease {
  token: string;
  kid: string;
  expiresAt: Date;
}

/** Machines (seats) of licenses, and the Ed25519 leases they run on. */
export function createMachineService(deps: {
  clock: Clock;
  events: Events;
  catalog: CatalogService;
  keyring: LicenseKeyring;
  signingKeys: SigningKeyStore;
  dataKey: DataKeys;
}) {
  const { clock, events, catalog, keyring, signingKeys, dataKey } = deps;

  /** The license a key names; with `lock`, locked for the rest of the transaction (seats are counted under it). */
  async function licenseOf(em: EntityManager, rawKey: string, lock = true): Promise<License> {
    const found = lookupLicenseKey(rawKey, keyring);
    if (!found.ok) throw unauthenticated("INVALID_LICENSE_KEY", "the license key is not valid");
    const license = await em.findOne(
      License,
      { keyDigest: found.digest },
      lock ? { lockMode: LockMode.PESSIMISTIC_WRITE } : {},
    );
    if (!license) throw unauthenticated("INVALID_LICENSE_KEY", "no license has this key");
    return license;
  }

  /** Refuses licenses that may not run: revoked, suspended, or expired without a strategy that keeps access. */
  function requireUsable(license: License, policy: Policy, opts: { newMachine: boolean }) {
    const now = clock.now();
    const status = effectiveStatus(license, now);
    if (status === "revoked") throw failedPrecondition("LICENSE_REVOKED", "the license was revoked");
    if (status === "suspended") throw failedPrecondition("LICENSE_SUSPENDED", "the license is suspended");
    if (status === "expired") {
      const inGrace = now.getTime() < license.expiresAt!.getTime() + policy.graceSeconds * 1000;
      const keeps =
        policy.expirationStrategy === "allow_access" ||
        (policy.expirationStrategy === "maintain_access" && !opts.newMachine);
      if (!inGrace && !keeps)
        throw failedPrecondition("LICENSE_EXPIRED", `the license expired at ${license.expiresAt!.toISOString()}`);
    }
  }

  async function lease(em: EntityManager, license: License, policy: Policy, machine: Machine): Promise<SignedLease> {
    return leaseOf(await catalog.getProduct(em, license.tenantId, license.productId), policy, license, machine);
  }

  /**
   * Heartbeat's one-statement path (machine-stamp.ts): the stamped machine and a fresh lease, or undefined with nothing
   * changed.
   */
  async function stampFast(
    db: Database,
    key: string,
    fingerprint: string,
  ): Promise<{ machine: Machine; lease: SignedLease; license: License; policy: Policy } | undefined> {
    const found = lookupLicenseKey(key, keyring);
    if (!found.ok) return undefined; // the full path says why
    const stamped = await stampMachine(db, found.digest, fingerprint, clock.now());
    if (!stamped) return undefined;
    const { license, policy, product, machine } = stamped;
    return { machine, lease: await leaseOf(product, policy, license, machine), license, policy };
  }

  /** Signs a lease from the four records it describes. */
  async function leaseOf(product: Product, policy: Policy, license: License, machine: Machine): Promise<SignedLease> {
    const now = clock.now();
    const ttl = machine.offline
      ? (policy.offlineLeaseTtlSeconds ?? DEFAULT_OFFLINE_LEASE_TTL_SECONDS)
      : (policy.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS);
    let expiresAt = new Date(now.getTime() + ttl * 1000);
    if (license.expiresAt && license.expiresAt > now && license.expiresAt < expiresAt) expiresAt = license.expiresAt;
    const kid = signingKeys.activeKid();
    const payload = {
      v: 1 as const,
      typ: "lease",
      license_id: license.id,
      tenant_id: license.tenantId,
      machine_id: machine.id,
      fingerprint: machine.fingerprint,
      product: { code: product.code, name: product.name },
      status: effectiveStatus(license, now),
      plan: policy.name,
      ...planClaims(product, policy, license),
      issued_at: now.toISOString(),
      expires_at: expiresAt.toISOString(),
      ...(machine.offline ? { offline: true } : {}),
      kid,
    };
    const input = `${ED25519_PREFIX}.${Buffer.from(JSON.stringify(payload)).toString("base64url")}`;
    const { signature } = signingKeys.sign(Buffer.from(input));
    return { token: `${input}.${signature.toString("base64url")}`, kid, expiresAt };
  }

  async function getMachine(em: EntityManager, tenantId: string, id: string, lock = false): Promise<Machine> {
    const machine = await em.findOne(Machine, { id, tenantId }, lock ? { lockMode: LockMode.PESSIMISTIC_WRITE } : {});
    if (!machine) throw notFound("machine", id);
    return machine;
  }

  async function remove(em: EntityManager, machine: Machine, actor: string, type: string) {
    em.remove(machine);
    await em.flush();
    await events.emit(em, {
      tenantId: machine.tenantId,
      type,
      subject: machine.id,
      actor,
      payload: { license_id: machine.licenseId, fingerprint: machine.fingerprint },
    });
    return machine;
  }

  /** Brings a dead machine back (a late heartbeat within the resurrection period, or an explicit activation). */
  async function revive(em: EntityManager, machine: Machine, license: License, via: string) {
    machine.status = "alive";
    machine.deadAt = null;
    await em.flush();
    await events.emit(em, {
      tenantId: machine.tenantId,
      type: "machine.heartbeat.resurrected",
      subject: machine.id,
      actor: `license:${license.id}`,
      payload: { license_id: license.id, via },
    });
  }

  /** The license as its policy's machine uniqueness scope sees it (machine-uniqueness.ts). */
  const scoped = (license: License, policy: Policy) => ({
    id: license.id,
    tenantId: license.tenantId,
    policyId: license.policyId,
    productId: license.productId,
    scope: policy.machineUniquenessScope,
  });

  /**
   * Creates a machine under the license's row lock, enforcing the core limit (a machine must say its cores),
   * node-locking, the seat limit and the fingerprint's uniqueness in the policy's scope.
   */
  async function addMachine(
    em: EntityManager,
    license: License,
    policy: Policy,
    info: MachineInfo & { offline: boolean },
    actor: string,
    components: readonly Component[] = [],
  ): Promise<Machine> {
    const now = clock.now();
    requireCoresReported(policy.maxCores, info.cores);
    const count = await em.count(Machine, { licenseId: license.id });
    if (!policy.floating && count >= 1) {
      throw failedPrecondition("FINGERPRINT_SCOPE_MISMATCH", "the license is node-locked to another machine", {
        license_id: license.id,
      });
    }
    const max = license.maxMachines ?? policy.maxMachines;
    if (max > 0 && count >= max) {
      throw failedPrecondition(
        "TOO_MANY_MACHINES",
        `the license is active on ${count} of ${max} machines; deactivate one first`,
        { license_id: license.id, max_machines: String(max) },
      );
    }
    await requireCoresFree(em, license, policy.maxCores, info.cores);
    await requireFingerprintFree(em, scoped(license, policy), info.fingerprint);
    const machine = em.create(Machine, {
      id: newId("mach"),
      tenantId: license.tenantId,
      licenseId: license.id,
      ...info,
      status: "alive",
      deadAt: null,
      lastHeartbeatAt: now,
      createdAt: now,
      updatedAt: now,
    });
    await flushUnique(em, () =>
      alreadyExists("MACHINE_EXISTS", "fingerprint: already activated", { field: "fingerprint" }),
    );
    for (const c of components)
      em.create(MachineComponent, { machineId: machine.id, tenantId: machine.tenantId, ...c, createdAt: now });
    if (components.length > 0) await em.flush();
    await emitActivated(em, machine, actor, components);
    // A first activation starts an expiry that waits for it (a license with a machine has had its first).
    if (license.expiryPending && startsExpiry(policy.expirationBasis, "activation")) {
      const { expiresAt } = await startExpiry(em, { clock, events }, license.id, "activation");
      Object.assign(license, { expiresAt, expiryPending: false, updatedAt: clock.now() });
    }
    return machine;
  }

  /** What the `machine.activated` entry of a created machine says, whichever path created it. */
  const activatedPayload = (machine: Machine, components: readonly Component[] = []) => ({
    license_id: machine.licenseId,
    fingerprint: machine.fingerprint,
    hostname: machine.hostname,
    platform: machine.platform,
    ip: machine.ip,
    offline: machine.offline,
    // Like the machine's, its components' fingerprints are no secrets; a machine without components says nothing.
    ...(components.length > 0
      ? { components: components.map((c) => ({ name: c.name, fingerprint: c.fingerprint })) }
      : {}),
  });

  /** The one `machine.activated` entry of a machine the full path created. */
  function emitActivated(em: EntityManager, machine: Machine, actor: string, components: readonly Component[]) {
    return events.emit(em, {
      tenantId: machine.tenantId,
      type: "machine.activated",
      subject: machine.id,
      actor,
      payload: activatedPayload(machine, components),
    });
  }

  /** The components of these machines, in name order, by machine id (a machine without any has no entry). */
  async function componentsOf(em: EntityManager, machineIds: string[]): Promise<Map<string, Component[]>> {
    const out = new Map<string, Component[]>();
    if (machineIds.length === 0) return out;
    const rows = await em.find(
      MachineComponent,
      { machineId: { $in: machineIds } },
      { orderBy: { machineId: "asc", name: "asc" } },
    );
    for (const r of rows) {
      const list = out.get(r.machineId) ?? [];
      list.push({ name: r.name, fingerprint: r.fingerprint });
      out.set(r.machineId, list);
    }
    return out;
  }

  /**
   * Activate's fast path (machine-stamp.ts), one autocommit statement shared with the process's concurrent
   * activations: under the license's lock, a machine already active and alive (an agent restarting) is stamped; a
   * machine the license has never had is created if a seat is free, and its `machine.activated` entry queued, to be
   * sequenced just after the answer (events.queuedSoon). Then the lease is signed. No transaction of licensd's, no
   * ORM. Undefined, having changed nothing, for anything else, which the full `activate` answers.
   */
  async function activateFast(db: Database, key: string, info: MachineInfo) {
    const found = lookupLicenseKey(key, keyring);
    if (!found.ok) return undefined; // the full path says why
    const now = clock.now();
    const machine = {
      id: newId("mach"),
      ...info,
      status: "alive",
      deadAt: null,
      offline: false,
      lastHeartbeatAt: now,
      createdAt: now,
      updatedAt: now,
    } as Machine;
    // The license's id completes the payload in the statement (it is not known before).
    const { license_id: _, ...payload } = activatedPayload(machine);
    const done = await activateMachine(db, found.digest, { ...machine, now }, { id: newId("evt"), payload });
    if (!done) return undefined;
    const { license, policy, product } = done;
    if (!done.added) return { machine: done.stamped, lease: await leaseOf(product, policy, license, done.stamped) };
    Object.assign(machine, { tenantId: license.tenantId, licenseId: license.id });
    events.queuedSoon(license.tenantId);
    return { machine, lease: await leaseOf(product, policy, license, machine) };
  }

  /** A machine that may run the app now: its license usable, the machine activated and alive. */
  async function running(em: EntityManager, license: License, machine: Machine) {
    const policy = await catalog.getPolicy(em, license.tenantId, license.policyId);
    requireUsable(license, policy, { newMachine: false });
    if (machine.status === "dead")
      throw failedPrecondition(
        "HEARTBEAT_DEAD",
        `the machine was declared dead at ${machine.deadAt!.toISOString()}; heartbeat or activate it again`,
        { machine_id: machine.id },
      );
    return { license, policy, machine };
  }

  return {
    getMachine,
    runsUntil,
    componentsOf,

    /** The license a key names (UNAUTHENTICATED for none), unlocked. */
    licenseByKey: (em: EntityManager, key: string) => licenseOf(em, key, false),

    /**
     * The license, policy and machine of a running app, named by its license key and fingerprint: NOT_FOUND for a
     * machine not activated, FAILED_PRECONDITION for a license that may not run or a dead machine. No lock.
     */
    async runningByKey(em: EntityManager, key: string, fingerprint: string) {
      const license = await licenseOf(em, key, false);
      const machine = await em.findOne(Machine, { licenseId: license.id, fingerprint });
      if (!machine) throw notFound("machine", fingerprint);
      return running(em, license, machine);
    },

    /** As `runningByKey`, for a machine named by id in a tenant (an admin's call). */
    async runningById(em: EntityManager, tenantId: string, machineId: string) {
      const machine = await getMachine(em, tenantId, machineId);
      const license = await em.findOneOrFail(License, { id: machine.licenseId });
      return running(em, license, machine);
    },

    /**
     * Activates the license on the machine, or returns the machine already activated with
     * that fingerprint. Seats are counted under the license's row lock, so concurrent
     * activations never exceed the limit. A machine created here registers `components` (checked: names unique); one
     * already activated keeps those it has.
     */
    async activate(
      em: EntityManager,
      key: string,
      info: MachineInfo,
      components: readonly Component[] = [],
    ): Promise<{ machine: Machine; lease: SignedLease; created: boolean }> {
      const license = await licenseOf(em, key);
      const policy = await catalog.getPolicy(em, license.tenantId, license.policyId);
      const now = clock.now();
      const existing = await em.findOne(Machine, { licenseId: license.id, fingerprint: info.fingerprint });
      requireUsable(license, policy, { newMachine: !existing });
      if (existing) {
        Object.assign(existing, {
          hostname: info.hostname || existing.hostname,
          platform: info.platform || existing.platform,
          cores: info.cores || existing.cores,
          ip: info.ip,
          lastHeartbeatAt: now,
          updatedAt: now,
        });
        if (existing.status === "dead") {
          await requireFingerprintFree(em, scoped(license, policy), existing.fingerprint);
          await revive(em, existing, license, "activate");
        }
        await em.flush();
        return { machine: existing, lease: await lease(em, license, policy, existing), created: false };
      }
      const actor = `license:${license.id}`;
      const machine = await addMachine(em, license, policy, { ...info, offline: false }, actor, components);
      return { machine, lease: await lease(em, license, policy, machine), created: true };
    },

    /**
     * Air-gapped activation: checks the request file (its license must be this tenant's,
     * its MAC made with that license's key), then activates like Activate, marks the
     * machine offline (never culled) and returns a long lease bound to its fingerprint.
     */
    async activateOffline(
      em: EntityManager,
      tenantId: string,
      actor: string,
      text: string,
    ): Promise<{ machine: Machine; lease: SignedLease }> {
      const parsed = parseOfflineActivationRequest(text);
      if (!parsed)
        throw invalidArgument(
          "request",
          "not a licensd activation request file (licensd-req1.…)",
          "INVALID_ACTIVATION_REQUEST",
        );
      const { request } = parsed;
      if (request.fingerprint.length < 1 || request.fingerprint.length > 255)
        throw invalidArgument("request", "fingerprint must be 1 to 255 characters", "INVALID_ACTIVATION_REQUEST");
      const created = Date.parse(request.created_at);
      const now = clock.now();
      if (
        !Number.isFinite(created) ||
        created > now.getTime() + 300_000 ||
        created < now.getTime() - OFFLINE_REQUEST_MAX_AGE_MS
      ) {
        throw invalidArgument(
          "request",
          "the request was created more than 90 days ago or in the future; write a new one",
          "ACTIVATION_REQUEST_EXPIRED",
        );
      }
      const license = await em.findOne(
        License,
        { tenantId, keyDigest: Buffer.from(request.key_digest, "base64url") },
        { lockMode: LockMode.PESSIMISTIC_WRITE },
      );
      if (!license) throw notFound("license", "(named by the request file)");
      if (
        !checkOfflineActivationRequest(parsed, open(dataKey, Buffer.from(license.keySealed), license.id).toString())
      ) {
        throw invalidArgument(
          "request",
          "the request file was altered or not written with this license's key",
          "INVALID_ACTIVATION_REQUEST",
        );
      }
      const policy = await catalog.getPolicy(em, license.tenantId, license.policyId);
      const existing = await em.findOne(Machine, { licenseId: license.id, fingerprint: request.fingerprint });
      requireUsable(license, policy, { newMachine: !existing });
      const info = {
        fingerprint: request.fingerprint,
        hostname: request.hostname.slice(0, 255),
        platform: request.platform.slice(0, 64),
        cores: Math.max(0, Math.min(request.cores, 100000)),
        ip: "",
        metadata: {},
      };
      let machine: Machine;
      if (existing) {
        if (existing.status === "dead") await requireFingerprintFree(em, scoped(license, policy), existing.fingerprint);
        Object.assign(existing, { offline: true, status: "alive", deadAt: null, lastHeartbeatAt: now, updatedAt: now });
        await em.flush();
        machine = existing;
      } else {
        machine = await addMachine(em, license, policy, { ...info, offline: true }, actor);
      }
      return { machine, lease: await lease(em, license, policy, machine) };
    },

    /**
     * Activate's common cases without the ORM, for an active, unexpired license: a machine already active and alive
     * (an agent restarting) is stamped; a machine the license never had is created if a seat is free. One statement
     * either way (machine-stamp.ts). Returns undefined, having changed nothing, for anything else, which the full
     * `activate` answers.
     */
    activateFast,

    /**
     * Heartbeat's common case in one statement and no ORM (machine-stamp.ts): a live
     * machine of an active, unexpired license is stamped and read back with its license,
     * policy and product. Returns undefined, having changed nothing, for anything else (a
     * dead machine, none, a license refused or in its grace period), which the full
     * `heartbeat` then answers with its reasons.
     */
    heartbeatFast: (db: Database, key: string, fingerprint: string) => stampFast(db, key, fingerprint),

    /**
     * Extends a machine's life; refused (with the reason) once its license may not run. Not audited: liveness, not a
     * change.
     */
    async heartbeat(
      em: EntityManager,
      key: string,
      fingerprint: string,
    ): Promise<{ machine: Machine; lease: SignedLease; license: License; policy: Policy }> {
      // No license lock: a heartbeat takes no seat, so agents of one license do not queue.
      const license = await licenseOf(em, key, false);
      const policy = await catalog.getPolicy(em, license.tenantId, license.policyId);
      const machine = await em.findOne(Machine, { licenseId: license.id, fingerprint });
      if (!machine) throw notFound("machine", fingerprint);
      requireUsable(license, policy, { newMachine: false });
      const now = clock.now();
      if (machine.status === "dead") {
        const window = policy.heartbeatResurrectionSeconds;
        if (window == null || machine.deadAt!.getTime() + window * 1000 < now.getTime()) {
          throw failedPrecondition(
            "HEARTBEAT_DEAD",
            `the machine was declared dead at ${machine.deadAt!.toISOString()} ` +
              "and can no longer be revived; activate it again",
            { machine_id: machine.id },
          );
        }
        await requireFingerprintFree(em, scoped(license, policy), machine.fingerprint);
        await revive(em, machine, license, "heartbeat");
      }
      machine.lastHeartbeatAt = now;
      machine.firstHeartbeatAt ??= now;
      await em.flush();
      return { machine, lease: await lease(em, license, policy, machine), license, policy };
    },

    /**
     * The license and machine a key and fingerprint name, read without locks or changes (ConnectLease's first look).
     */
    async identify(
      em: EntityManager,
      key: string,
      fingerprint: string,
    ): Promise<{ license: License; machine: Machine }> {
      const license = await licenseOf(em, key, false);
      const machine = await em.findOne(Machine, { licenseId: license.id, fingerprint });
      if (!machine) throw notFound("machine", fingerprint);
      return { license, machine };
    },

    /** A fresh lease for a machine of a license, if the machine is activated (for ValidateLicense). */
    async leaseFor(em: EntityManager, licenseId: string, fingerprint: string): Promise<SignedLease | undefined> {
      const machine = await em.findOne(Machine, { licenseId, fingerprint });
      const license = machine && (await em.findOne(License, { id: licenseId }));
      if (!machine || !license) return undefined;
      return lease(em, license, await catalog.getPolicy(em, license.tenantId, license.policyId), machine);
    },

    async deactivateByKey(em: EntityManager, key: string, fingerprint: string): Promise<Machine> {
      const license = await licenseOf(em, key);
      const machine = await em.findOne(Machine, { licenseId: license.id, fingerprint });
      if (!machine) throw notFound("machine", fingerprint);
      return remove(em, machine, `license:${license.id}`, "machine.deactivated");
    },

    async deactivateById(em: EntityManager, tenantId: string, actor: string, id: string): Promise<Machine> {
      return remove(em, await getMachine(em, tenantId, id, true), actor, "machine.deactivated");
    },

    async delete(em: EntityManager, tenantId: string, actor: string, id: string): Promise<Machine> {
      return remove(em, await getMachine(em, tenantId, id, true), actor, "machine.deleted");
    },

    list: (em: EntityManager, tenantId: string, page: Page, licenseId: string, status?: "alive" | "dead") =>
      em.find(
        Machine,
        {
          tenantId,
          ...(licenseId ? { licenseId } : {}),
          ...(status ? { status } : {}),
          ...(page.after ? { id: { $gt: page.after } } : {}),
        },
        { orderBy: { id: "asc" }, limit: page.size + 1 },
      ),
  };
}

export type MachineService = ReturnType<typeof createMachineService>;
