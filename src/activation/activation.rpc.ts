import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import * as pb from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { MachineSchema, MachineStatus } from "../../gen/ts/licensd/activation/v1/machine_pb.js";
import { SigningKeySchema, SigningKeyStatus } from "../../gen/ts/licensd/activation/v1/signing_key_pb.js";
import { requireSuperAdmin } from "../platform/auth.js";
import { peerAddressKey, principalKey } from "../platform/context.js";
import { sha256 } from "../platform/crypto.js";
import type { Database } from "../platform/db.js";
import { DomainError, invalidArgument } from "../platform/errors.js";
import type { Clock } from "../platform/clock.js";
import type { RateRule } from "../platform/rate-limit.js";
import type { RateLimiter } from "../platform/rate-limit.js";
import type { KeyFailureLimit } from "../platform/key-failures.js";
import { addressBucket } from "../platform/client-address.js";
import { normalizeLicenseKey } from "../licensing/license-key.js";
import type { LeaseHub } from "./lease-hub.js";
import type { Idempotency } from "../platform/idempotency.js";
import { Interrupt } from "../platform/interrupt.js";
import type { PageTokens } from "../platform/pagination.js";
import { procedureOf, readTenant, tenantMutation } from "../platform/rpc.js";
import type { PublicSigningKey, SigningKeyStore } from "../platform/signing-keys.js";
import type { Machine } from "./machine.entity.js";
import type { MachineService, SignedLease } from "./machine.service.js";

/** What RotateSigningKey keeps a retired key verifiable for when the request says nothing. */
const DEFAULT_RETIRE_AFTER_SECONDS = 30 * 86_400;

const signingKeyToProto = (k: PublicSigningKey) =>
  create(SigningKeySchema, {
    kid: k.kid,
    algorithm: k.algorithm,
    publicKey: k.publicKey,
    status: k.status === "active" ? SigningKeyStatus.ACTIVE : SigningKeyStatus.RETIRING,
    notBefore: timestampFromDate(k.notBefore),
    notAfter: k.notAfter ? timestampFromDate(k.notAfter) : undefined,
  });

const machineToProto = (m: Machine) =>
  create(MachineSchema, {
    id: m.id,
    tenantId: m.tenantId,
    licenseId: m.licenseId,
    fingerprint: m.fingerprint,
    hostname: m.hostname,
    platform: m.platform,
    cores: m.cores,
    ip: m.ip,
    metadata: m.metadata,
    lastHeartbeatTime: timestampFromDate(m.lastHeartbeatAt),
    status: m.status === "dead" ? MachineStatus.DEAD : MachineStatus.ALIVE,
    deathTime: m.deadAt ? timestampFromDate(m.deadAt) : undefined,
    offline: m.offline,
    createTime: timestampFromDate(m.createdAt),
    updateTime: timestampFromDate(m.updatedAt),
  });

const leaseToProto = (l: SignedLease) => ({ token: l.token, kid: l.kid, expireTime: timestampFromDate(l.expiresAt) });

/** Calls authenticated by a license key are scoped (rate buckets, idempotency) by the digest of the key as licenses are found by it, however it was typed. */
const keyScope = (key: string) => `key:${sha256(normalizeLicenseKey(key)).toString("hex").slice(0, 32)}`;

/** Failures of a heartbeat that mean the machine may no longer run (pushed as a revocation on ConnectLease). */
const REVOKING_REASONS = new Set(["LICENSE_SUSPENDED", "LICENSE_REVOKED", "LICENSE_EXPIRED", "HEARTBEAT_DEAD", "MACHINE_NOT_FOUND"]);

/** setTimeout's ceiling (about 24.8 days); later deadlines are re-armed by a later heartbeat. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface ActivationRpcDeps {
  db: Database;
  clock: Clock;
  idempotency: Idempotency;
  signingKeys: SigningKeyStore;
  machines: MachineService;
  hub: LeaseHub;
  rateLimiter: RateLimiter;
  rates: { perLicense: RateRule | null; perIp: RateRule | null };
  pages: PageTokens;
  keyFailures: KeyFailureLimit;
}

/** The Connect implementation of licensd.activation.v1.ActivationService. */
export function createActivationRpc(deps: ActivationRpcDeps): ServiceImpl<typeof pb.ActivationService> {
  const { db, clock, idempotency, signingKeys, machines, hub, rateLimiter, rates, pages, keyFailures } = deps;

  /** Activation attempts draw from the client address's bucket and the key's bucket (per-instance bound: none, buckets live in PostgreSQL). */
  async function limitActivation(key: string, ip: string) {
    if (rates.perIp && ip) await rateLimiter.take(`activate:ip:${addressBucket(ip)}`, rates.perIp, "activations from this address");
    if (rates.perLicense) await rateLimiter.take(`activate:${keyScope(key)}`, rates.perLicense, "activations of this license");
  }

  return {
    activate: (req, ctx) =>
      keyFailures.guard(ctx.values.get(peerAddressKey), async () => {
        await limitActivation(req.key, ctx.values.get(peerAddressKey));
        const info = { fingerprint: req.fingerprint, hostname: req.hostname, platform: req.platform, cores: req.cores, ip: ctx.values.get(peerAddressKey), metadata: req.metadata };
        // A machine already active and alive (an agent restarting), without an idempotency key
        // to record: one statement. Anything else takes the full path, in one transaction.
        const again = req.idempotencyKey ? undefined : await machines.activateFast(db, req.key, info);
        if (again) return create(pb.ActivateResponseSchema, { machine: machineToProto(again.machine), lease: leaseToProto(again.lease) });
        return idempotency.run({ scope: keyScope(req.key), procedure: procedureOf(ctx), requestSchema: pb.ActivateRequestSchema, request: req, responseSchema: pb.ActivateResponseSchema }, async (em) => {
          const { machine, lease } = await machines.activate(em, req.key, info);
          return create(pb.ActivateResponseSchema, { machine: machineToProto(machine), lease: leaseToProto(lease) });
        });
      }),

    activateOffline: (req, ctx) =>
      tenantMutation(idempotency, ctx, { requestSchema: pb.ActivateOfflineRequestSchema, request: req, responseSchema: pb.ActivateOfflineResponseSchema }, async (em, m) => {
        const { machine, lease } = await machines.activateOffline(em, m.tenantId, m.actor, req.request);
        return create(pb.ActivateOfflineResponseSchema, { machine: machineToProto(machine), lease: leaseToProto(lease) });
      }),

    async *connectLease(requests, ctx) {
      const input = requests[Symbol.asyncIterator]();
      // A revocation or the client going away, raced with each message (a stream may stay open for days).
      const stop = new Interrupt<{ kind: "revoked"; r: { reason: string; message: string } } | { kind: "aborted" }>();
      const revoke = (r: { reason: string; message: string }) => stop.raise({ kind: "revoked", r });
      const onAbort = () => stop.raise({ kind: "aborted" });
      if (ctx.signal.aborted) onAbort();
      else ctx.signal.addEventListener("abort", onAbort, { once: true });
      const revocation = (r: { reason: string; message: string }) =>
        create(pb.ConnectLeaseResponseSchema, { event: { case: "revocation", value: { reason: r.reason, message: r.message, revokeTime: timestampFromDate(clock.now()) } } });
      let stopWatching: (() => void) | undefined;
      let expiry: NodeJS.Timeout | undefined;
      let key = "";
      let fingerprint = "";
      try {
        for (;;) {
          const next = await Promise.race([input.next().then((r) => ({ kind: "message" as const, r })), stop.next()]);
          if (next.kind === "aborted") return;
          if (next.kind === "revoked") {
            yield revocation(next.r);
            return;
          }
          if (next.r.done) return;
          const msg = next.r.value;
          if (!stopWatching) {
            if (!msg.key) throw invalidArgument("key", "the first message must carry the license key");
            if (!msg.fingerprint) throw invalidArgument("fingerprint", "the first message must carry the machine's fingerprint");
            ({ key, fingerprint } = msg);
            // Watch first, then check: a change committed in between is still pushed.
            const { license, machine } = await keyFailures.guard(ctx.values.get(peerAddressKey), () => machines.identify(db.em(), key, fingerprint));
            stopWatching = await hub.watch(license.tenantId, [license.id, machine.id], (reason, message) => revoke({ reason, message }));
          } else if ((msg.key && msg.key !== key) || (msg.fingerprint && msg.fingerprint !== fingerprint)) {
            throw invalidArgument(msg.key !== key ? "key" : "fingerprint", "must match the stream's first message (or be empty)");
          }
          let beat;
          try {
            beat = (await machines.heartbeatFast(db, key, fingerprint)) ?? (await db.tx((em) => machines.heartbeat(em, key, fingerprint)));
          } catch (err) {
            if (err instanceof DomainError && REVOKING_REASONS.has(err.reason)) {
              yield revocation({ reason: err.reason === "MACHINE_NOT_FOUND" ? "MACHINE_DEACTIVATED" : err.reason, message: err.message });
              return;
            }
            throw err;
          }
          clearTimeout(expiry);
          const until = machines.runsUntil(beat.license, beat.policy);
          if (until) {
            const ms = until.getTime() - clock.now().getTime();
            if (ms <= MAX_TIMER_MS) expiry = setTimeout(() => revoke({ reason: "LICENSE_EXPIRED", message: `the license expired at ${beat.license.expiresAt!.toISOString()}` }), Math.max(0, ms));
          }
          yield create(pb.ConnectLeaseResponseSchema, { event: { case: "lease", value: leaseToProto(beat.lease) } });
        }
      } finally {
        ctx.signal.removeEventListener("abort", onAbort);
        stopWatching?.();
        clearTimeout(expiry);
        void input.return?.();
      }
    },

    deactivate: (req, ctx) => {
      if (req.machineId) {
        return tenantMutation(idempotency, ctx, { requestSchema: pb.DeactivateRequestSchema, request: req, responseSchema: pb.DeactivateResponseSchema }, async (em, m) =>
          create(pb.DeactivateResponseSchema, { machine: machineToProto(await machines.deactivateById(em, m.tenantId, m.actor, req.machineId)) }),
        );
      }
      if (!req.key || !req.fingerprint) throw invalidArgument("key", "give key and fingerprint, or machine_id with an admin key");
      return keyFailures.guard(ctx.values.get(peerAddressKey), () =>
        idempotency.run({ scope: keyScope(req.key), procedure: procedureOf(ctx), requestSchema: pb.DeactivateRequestSchema, request: req, responseSchema: pb.DeactivateResponseSchema }, async (em) =>
          create(pb.DeactivateResponseSchema, { machine: machineToProto(await machines.deactivateByKey(em, req.key, req.fingerprint)) }),
        ),
      );
    },

    heartbeat: (req, ctx) =>
      keyFailures.guard(ctx.values.get(peerAddressKey), async () => {
        const { machine, lease } = (await machines.heartbeatFast(db, req.key, req.fingerprint)) ?? (await db.tx((em) => machines.heartbeat(em, req.key, req.fingerprint)));
        return create(pb.HeartbeatResponseSchema, { machine: machineToProto(machine), lease: leaseToProto(lease) });
      }),

    async getMachine(req, ctx) {
      return create(pb.GetMachineResponseSchema, { machine: machineToProto(await machines.getMachine(db.em(), readTenant(ctx, req.tenantId), req.id)) });
    },

    async listMachines(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const status = req.status === MachineStatus.DEAD ? "dead" : req.status === MachineStatus.ALIVE ? "alive" : undefined;
      const page = pages.read(req.pageSize, req.pageToken, { list: procedureOf(ctx), tenantId, filters: { licenseId: req.licenseId, status: status ?? "" } });
      const { items, nextPageToken } = pages.pageOf(await machines.list(db.em(), tenantId, page, req.licenseId, status), page);
      return create(pb.ListMachinesResponseSchema, { machines: items.map(machineToProto), nextPageToken });
    },

    deleteMachine: (req, ctx) =>
      tenantMutation(idempotency, ctx, { requestSchema: pb.DeleteMachineRequestSchema, request: req, responseSchema: pb.DeleteMachineResponseSchema }, async (em, m) =>
        create(pb.DeleteMachineResponseSchema, { machine: machineToProto(await machines.delete(em, m.tenantId, m.actor, req.id)) }),
      ),

    getSigningKeys() {
      return create(pb.GetSigningKeysResponseSchema, { keys: signingKeys.publicKeys().map(signingKeyToProto) });
    },

    async rotateSigningKey(req, ctx) {
      requireSuperAdmin(ctx.values.get(principalKey));
      const retireAfterSeconds = req.retireAfter ? Number(req.retireAfter.seconds) + req.retireAfter.nanos / 1e9 : DEFAULT_RETIRE_AFTER_SECONDS;
      const call = { scope: "*", procedure: procedureOf(ctx), requestSchema: pb.RotateSigningKeyRequestSchema, request: req, responseSchema: pb.RotateSigningKeyResponseSchema };
      const res = await idempotency.run(call, async (em) => {
        const { key, retiring } = await signingKeys.rotate(em, retireAfterSeconds);
        return create(pb.RotateSigningKeyResponseSchema, { key: signingKeyToProto(key), retiringKids: retiring });
      });
      // This instance signs with the new key from now on; the others reload within a minute.
      await signingKeys.reload();
      return res;
    },
  };
}
