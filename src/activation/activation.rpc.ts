import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import * as pb from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { MachineSchema } from "../../gen/ts/licensd/activation/v1/machine_pb.js";
import { SigningKeyStatus } from "../../gen/ts/licensd/activation/v1/signing_key_pb.js";
import { peerAddressKey } from "../platform/context.js";
import { sha256 } from "../platform/crypto.js";
import type { Database } from "../platform/db.js";
import { invalidArgument } from "../platform/errors.js";
import type { Idempotency } from "../platform/idempotency.js";
import { pageOf, readPage } from "../platform/pagination.js";
import { procedureOf, readTenant, tenantMutation } from "../platform/rpc.js";
import type { SigningKeyStore } from "../platform/signing-keys.js";
import type { Machine } from "./machine.entity.js";
import type { MachineService, SignedLease } from "./machine.service.js";

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
    createTime: timestampFromDate(m.createdAt),
    updateTime: timestampFromDate(m.updatedAt),
  });

const leaseToProto = (l: SignedLease) => ({ token: l.token, kid: l.kid, expireTime: timestampFromDate(l.expiresAt) });

/** Calls authenticated by a license key are scoped (for idempotency) by the key's digest. */
const keyScope = (key: string) => `key:${sha256(key.trim()).toString("hex").slice(0, 32)}`;

/** The Connect implementation of licensd.activation.v1.ActivationService. */
export function createActivationRpc(deps: { db: Database; idempotency: Idempotency; signingKeys: SigningKeyStore; machines: MachineService }): ServiceImpl<typeof pb.ActivationService> {
  const { db, idempotency, signingKeys, machines } = deps;
  return {
    activate: (req, ctx) =>
      idempotency.run({ scope: keyScope(req.key), procedure: procedureOf(ctx), requestSchema: pb.ActivateRequestSchema, request: req, responseSchema: pb.ActivateResponseSchema }, async (em) => {
        const { machine, lease } = await machines.activate(em, req.key, {
          fingerprint: req.fingerprint,
          hostname: req.hostname,
          platform: req.platform,
          cores: req.cores,
          ip: ctx.values.get(peerAddressKey),
          metadata: req.metadata,
        });
        return create(pb.ActivateResponseSchema, { machine: machineToProto(machine), lease: leaseToProto(lease) });
      }),

    deactivate: (req, ctx) => {
      if (req.machineId) {
        return tenantMutation(idempotency, ctx, { requestSchema: pb.DeactivateRequestSchema, request: req, responseSchema: pb.DeactivateResponseSchema }, async (em, m) =>
          create(pb.DeactivateResponseSchema, { machine: machineToProto(await machines.deactivateById(em, m.tenantId, m.actor, req.machineId)) }),
        );
      }
      if (!req.key || !req.fingerprint) throw invalidArgument("key", "give key and fingerprint, or machine_id with an admin key");
      return idempotency.run({ scope: keyScope(req.key), procedure: procedureOf(ctx), requestSchema: pb.DeactivateRequestSchema, request: req, responseSchema: pb.DeactivateResponseSchema }, async (em) =>
        create(pb.DeactivateResponseSchema, { machine: machineToProto(await machines.deactivateByKey(em, req.key, req.fingerprint)) }),
      );
    },

    async heartbeat(req) {
      const { machine, lease } = await db.tx((em) => machines.heartbeat(em, req.key, req.fingerprint));
      return create(pb.HeartbeatResponseSchema, { machine: machineToProto(machine), lease: leaseToProto(lease) });
    },

    async getMachine(req, ctx) {
      return create(pb.GetMachineResponseSchema, { machine: machineToProto(await machines.getMachine(db.em(), readTenant(ctx, req.tenantId), req.id)) });
    },

    async listMachines(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const filters = { tenantId, l: req.licenseId };
      const page = readPage(req.pageSize, req.pageToken, filters);
      const { items, nextPageToken } = pageOf(await machines.list(db.em(), tenantId, page, req.licenseId), page, filters);
      return create(pb.ListMachinesResponseSchema, { machines: items.map(machineToProto), nextPageToken });
    },

    deleteMachine: (req, ctx) =>
      tenantMutation(idempotency, ctx, { requestSchema: pb.DeleteMachineRequestSchema, request: req, responseSchema: pb.DeleteMachineResponseSchema }, async (em, m) =>
        create(pb.DeleteMachineResponseSchema, { machine: machineToProto(await machines.delete(em, m.tenantId, m.actor, req.id)) }),
      ),

    getSigningKeys() {
      return create(pb.GetSigningKeysResponseSchema, {
        keys: signingKeys.publicKeys().map((k) => ({
          kid: k.kid,
          algorithm: k.algorithm,
          publicKey: k.publicKey,
          status: k.status === "active" ? SigningKeyStatus.ACTIVE : SigningKeyStatus.RETIRING,
          notBefore: timestampFromDate(k.notBefore),
          notAfter: k.notAfter ? timestampFromDate(k.notAfter) : undefined,
        })),
      });
    },
  };
}
