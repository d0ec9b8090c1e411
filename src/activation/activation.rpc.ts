import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import * as pb from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { MachineSchema, MachineStatus } from "../../gen/ts/licensd/activation/v1/machine_pb.js";
import { SigningKeySchema, SigningKeyStatus } from "../../gen/ts/licensd/activation/v1/signing_key_pb.js";
import { requireSuperAdmin } from "../platform/auth.js";
import { peerAddressKey, principalKey } from "../platform/context.js";
import type { Database } from "../platform/db.js";
import type { ReplicaReads } from "../platform/replicas.js";
import { invalidArgument } from "../platform/errors.js";
import type { RateRule } from "../platform/rate-limit.js";
import type { RateLimiter } from "../platform/rate-limit.js";
import type { KeyFailureLimit } from "../platform/key-failures.js";
import { addressBucket } from "../platform/client-address.js";
import type { LeanCall, LeanSession } from "../platform/lean-stream.js";
import type { LeaseEvent, LeaseSessions } from "./lease-session.js";
import type { Idempotency } from "../platform/idempotency.js";
import type { PageTokens } from "../platform/pagination.js";
import { procedureOf, readTenant, tenantMutation } from "../platform/rpc.js";
import type { PublicSigningKey, SigningKeyStore } from "../platform/signing-keys.js";
import type { Machine } from "./machine.entity.js";
import { checkedComponents, type Component } from "../licensing/license-machines.js";
import type { MachineService, SignedLease } from "./machine.service.js";
import { keyScope } from "./key-scope.js";
import type { ProcessMethods } from "./process.rpc.js";

type ActivationImpl = ServiceImpl<typeof pb.ActivationService>;

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

const machineToProto = (m: Machine, components: readonly Component[] = []) =>
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
    components: components.map((c) => ({ name: c.name, fingerprint: c.fingerprint })),
    createTime: timestampFromDate(m.createdAt),
    updateTime: timestampFromDate(m.updatedAt),
  });

/** A ConnectLease answer. */
const leaseEventToProto = (event: LeaseEvent): MessageInitShape<typeof pb.ConnectLeaseResponseSchema> => ({
  event:
    event.kind === "lease"
      ? { case: "lease", value: leaseToProto(event.lease) }
      : {
          case: "revocation",
          value: { reason: event.reason, message: event.message, revokeTime: timestampFromDate(event.time) },
        },
});

/**
 * ConnectLease on the lean gRPC path (platform/lean-stream.ts): the same sessions as `connectLease`, driven by
 * callbacks.
 */
export function leaseStream(leases: LeaseSessions) {
  return (call: LeanCall<typeof pb.ConnectLeaseResponseSchema>): LeanSession<typeof pb.ConnectLeaseRequestSchema> => {
    const session = leases.attach(call.address, {
      event: (e) => call.send(leaseEventToProto(e)),
      end: () => call.end(),
    });
    return { message: (m) => session.message(m), close: session.close };
  };
}

const leaseToProto = (l: SignedLease) => ({ token: l.token, kid: l.kid, expireTime: timestampFromDate(l.expiresAt) });

export interface ActivationRpcDeps {
  db: Database;
  /** Lists and other reads that tolerate bounded staleness (docs/replicas.md). */
  reads: ReplicaReads;
  idempotency: Idempotency;
  signingKeys: SigningKeyStore;
  machines: MachineService;
  leases: LeaseSessions;
  rateLimiter: RateLimiter;
  rates: { perLicense: RateRule | null; perIp: RateRule | null };
  pages: PageTokens;
  keyFailures: KeyFailureLimit;
}

/** The Connect implementation of licensd.activation.v1.ActivationService. */
export function createActivationRpc(deps: ActivationRpcDeps): Omit<ActivationImpl, ProcessMethods> {
  const { db, reads, idempotency, signingKeys, machines, leases, rateLimiter, rates, pages, keyFailures } = deps;

  /**
   * Activation attempts draw from the client address's bucket and the key's bucket (per-instance bound: none, buckets
   * live in PostgreSQL).
   */
  async function limitActivation(key: string, ip: string) {
    if (rates.perIp && ip)
      await rateLimiter.take(`activate:ip:${addressBucket(ip)}`, rates.perIp, "activations from this address");
    if (rates.perLicense)
      await rateLimiter.take(`activate:${keyScope(key)}`, rates.perLicense, "activations of this license");
  }

  return {
    activate: (req, ctx) =>
      keyFailures.guard(ctx.values.get(peerAddressKey), async () => {
        await limitActivation(req.key, ctx.values.get(peerAddressKey));
        const info = {
          fingerprint: req.fingerprint,
          hostname: req.hostname,
          platform: req.platform,
          cores: req.cores,
          ip: ctx.values.get(peerAddressKey),
          metadata: req.metadata,
        };
        const components = checkedComponents(req.components);
        // Without an idempotency key to record or components to register, a machine already active and alive (an agent
        // restarting) or a new one of a usable license takes the fast path (no ORM); anything else the full path, in
        // one transaction.
        const fast =
          req.idempotencyKey || components.length > 0 ? undefined : await machines.activateFast(db, req.key, info);
        if (fast)
          return create(pb.ActivateResponseSchema, {
            machine: machineToProto(fast.machine),
            lease: leaseToProto(fast.lease),
          });
        return idempotency.run(
          {
            scope: keyScope(req.key),
            procedure: procedureOf(ctx),
            requestSchema: pb.ActivateRequestSchema,
            request: req,
            responseSchema: pb.ActivateResponseSchema,
          },
          async (em) => {
            const { machine, lease } = await machines.activate(em, req.key, info, components);
            const registered = (await machines.componentsOf(em, [machine.id])).get(machine.id);
            return create(pb.ActivateResponseSchema, {
              machine: machineToProto(machine, registered),
              lease: leaseToProto(lease),
            });
          },
        );
      }),

    activateOffline: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.ActivateOfflineRequestSchema,
          request: req,
          responseSchema: pb.ActivateOfflineResponseSchema,
        },
        async (em, m) => {
          const { machine, lease } = await machines.activateOffline(em, m.tenantId, m.actor, req.request);
          return create(pb.ActivateOfflineResponseSchema, {
            machine: machineToProto(machine),
            lease: leaseToProto(lease),
          });
        },
      ),

    async *connectLease(requests, ctx) {
      for await (const event of leases.run(requests, { signal: ctx.signal, address: ctx.values.get(peerAddressKey) })) {
        yield create(pb.ConnectLeaseResponseSchema, leaseEventToProto(event));
      }
    },

    deactivate: (req, ctx) => {
      if (req.machineId) {
        return tenantMutation(
          idempotency,
          ctx,
          { requestSchema: pb.DeactivateRequestSchema, request: req, responseSchema: pb.DeactivateResponseSchema },
          async (em, m) =>
            create(pb.DeactivateResponseSchema, {
              machine: machineToProto(await machines.deactivateById(em, m.tenantId, m.actor, req.machineId)),
            }),
        );
      }
      if (!req.key || !req.fingerprint)
        throw invalidArgument("key", "give key and fingerprint, or machine_id with an admin key");
      return keyFailures.guard(ctx.values.get(peerAddressKey), () =>
        idempotency.run(
          {
            scope: keyScope(req.key),
            procedure: procedureOf(ctx),
            requestSchema: pb.DeactivateRequestSchema,
            request: req,
            responseSchema: pb.DeactivateResponseSchema,
          },
          async (em) =>
            create(pb.DeactivateResponseSchema, {
              machine: machineToProto(await machines.deactivateByKey(em, req.key, req.fingerprint)),
            }),
        ),
      );
    },

    heartbeat: (req, ctx) =>
      keyFailures.guard(ctx.values.get(peerAddressKey), async () => {
        const { machine, lease } =
          (await machines.heartbeatFast(db, req.key, req.fingerprint)) ??
          (await db.tx((em) => machines.heartbeat(em, req.key, req.fingerprint)));
        return create(pb.HeartbeatResponseSchema, { machine: machineToProto(machine), lease: leaseToProto(lease) });
      }),

    async getMachine(req, ctx) {
      const em = db.em();
      const machine = await machines.getMachine(em, readTenant(ctx, req.tenantId), req.id);
      const components = (await machines.componentsOf(em, [machine.id])).get(machine.id);
      return create(pb.GetMachineResponseSchema, { machine: machineToProto(machine, components) });
    },

    async listMachines(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const status =
        req.status === MachineStatus.DEAD ? "dead" : req.status === MachineStatus.ALIVE ? "alive" : undefined;
      const page = pages.read(req.pageSize, req.pageToken, {
        list: procedureOf(ctx),
        tenantId,
        filters: { licenseId: req.licenseId, status: status ?? "" },
      });
      const { items, nextPageToken, components } = await reads.run(async (em) => {
        const listed = pages.pageOf(await machines.list(em, tenantId, page, req.licenseId, status), page);
        return {
          ...listed,
          components: await machines.componentsOf(
            em,
            listed.items.map((m) => m.id),
          ),
        };
      });
      return create(pb.ListMachinesResponseSchema, {
        machines: items.map((m) => machineToProto(m, components.get(m.id))),
        nextPageToken,
      });
    },

    deleteMachine: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        { requestSchema: pb.DeleteMachineRequestSchema, request: req, responseSchema: pb.DeleteMachineResponseSchema },
        async (em, m) =>
          create(pb.DeleteMachineResponseSchema, {
            machine: machineToProto(await machines.delete(em, m.tenantId, m.actor, req.id)),
          }),
      ),

    getSigningKeys() {
      return create(pb.GetSigningKeysResponseSchema, { keys: signingKeys.publicKeys().map(signingKeyToProto) });
    },

    async rotateSigningKey(req, ctx) {
      requireSuperAdmin(ctx.values.get(principalKey));
      const retireAfterSeconds = req.retireAfter
        ? Number(req.retireAfter.seconds) + req.retireAfter.nanos / 1e9
        : DEFAULT_RETIRE_AFTER_SECONDS;
      const call = {
        scope: "*",
        procedure: procedureOf(ctx),
        requestSchema: pb.RotateSigningKeyRequestSchema,
        request: req,
        responseSchema: pb.RotateSigningKeyResponseSchema,
      };
      const res = await idempotency.run(call, async (em) => {
        const { key, retiring, retired } = await signingKeys.rotate(em, retireAfterSeconds);
        return create(pb.RotateSigningKeyResponseSchema, {
          key: signingKeyToProto(key),
          retiringKids: retiring,
          retiredKids: retired,
        });
      });
      // This instance signs with the new key from now on; the others reload when they hear the rotation's NOTIFY.
      await signingKeys.reload();
      return res;
    },
  };
}
