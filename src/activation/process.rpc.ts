import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import * as pb from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { ProcessSchema, ProcessStatus } from "../../gen/ts/licensd/activation/v1/process_pb.js";
import { peerAddressKey } from "../platform/context.js";
import type { Clock } from "../platform/clock.js";
import type { Database } from "../platform/db.js";
import { invalidArgument } from "../platform/errors.js";
import type { Idempotency } from "../platform/idempotency.js";
import type { KeyFailureLimit } from "../platform/key-failures.js";
import type { PageTokens } from "../platform/pagination.js";
import type { ReplicaReads } from "../platform/replicas.js";
import { procedureOf, readTenant, tenantMutation } from "../platform/rpc.js";
import { keyScope } from "./key-scope.js";
import type { Process } from "./process.entity.js";
import { processAlive, type ProcessService } from "./process.service.js";

type ActivationImpl = ServiceImpl<typeof pb.ActivationService>;
export type ProcessMethods = "spawnProcess" | "pingProcess" | "killProcess" | "getProcess" | "listProcesses";

/** A process as the API shows it, alive or dead at `now`. */
export const processToProto = (p: Process, now: Date) =>
  create(ProcessSchema, {
    id: p.id,
    tenantId: p.tenantId,
    licenseId: p.licenseId,
    machineId: p.machineId,
    pid: p.pid,
    metadata: p.metadata,
    status: processAlive(p, now) ? ProcessStatus.ALIVE : ProcessStatus.DEAD,
    lastHeartbeatTime: timestampFromDate(p.lastHeartbeatAt),
    heartbeatDuration: { seconds: BigInt(p.heartbeatSeconds), nanos: 0 },
    createTime: timestampFromDate(p.createdAt),
    updateTime: timestampFromDate(p.updatedAt),
  });

/** Processes of licensd.activation.v1.ActivationService: the app with its license key, or an admin key. */
export function createProcessRpc(deps: {
  db: Database;
  reads: ReplicaReads;
  clock: Clock;
  idempotency: Idempotency;
  processes: ProcessService;
  pages: PageTokens;
  keyFailures: KeyFailureLimit;
}): Pick<ActivationImpl, ProcessMethods> {
  const { db, reads, clock, idempotency, processes, pages, keyFailures } = deps;
  const toProto = (p: Process) => processToProto(p, clock.now());

  return {
    spawnProcess: (req, ctx) => {
      const input = { pid: req.pid, metadata: req.metadata };
      if (req.machineId)
        return tenantMutation(
          idempotency,
          ctx,
          { requestSchema: pb.SpawnProcessRequestSchema, request: req, responseSchema: pb.SpawnProcessResponseSchema },
          async (em, m) =>
            create(pb.SpawnProcessResponseSchema, {
              process: toProto(await processes.spawnByMachine(em, m.tenantId, m.actor, req.machineId, input)),
            }),
        );
      if (!req.key || !req.fingerprint)
        throw invalidArgument("key", "give key and fingerprint, or machine_id with an admin key");
      return keyFailures.guard(ctx.values.get(peerAddressKey), () =>
        idempotency.run(
          {
            scope: keyScope(req.key),
            procedure: procedureOf(ctx),
            requestSchema: pb.SpawnProcessRequestSchema,
            request: req,
            responseSchema: pb.SpawnProcessResponseSchema,
          },
          async (em) =>
            create(pb.SpawnProcessResponseSchema, {
              process: toProto(await processes.spawnByKey(em, req.key, req.fingerprint, input)),
            }),
        ),
      );
    },

    async pingProcess(req, ctx) {
      if (req.key) {
        const process = await keyFailures.guard(ctx.values.get(peerAddressKey), () =>
          db.tx((em) => processes.ping(em, { key: req.key }, req.id)),
        );
        return create(pb.PingProcessResponseSchema, { process: toProto(process) });
      }
      const tenantId = readTenant(ctx, req.tenantId, "admin");
      const process = await db.tx((em) => processes.ping(em, { tenantId }, req.id));
      return create(pb.PingProcessResponseSchema, { process: toProto(process) });
    },

    killProcess: (req, ctx) => {
      if (!req.key)
        return tenantMutation(
          idempotency,
          ctx,
          { requestSchema: pb.KillProcessRequestSchema, request: req, responseSchema: pb.KillProcessResponseSchema },
          async (em, m) =>
            create(pb.KillProcessResponseSchema, {
              process: toProto(await processes.kill(em, { tenantId: m.tenantId }, m.actor, req.id)),
            }),
        );
      return keyFailures.guard(ctx.values.get(peerAddressKey), () =>
        idempotency.run(
          {
            scope: keyScope(req.key),
            procedure: procedureOf(ctx),
            requestSchema: pb.KillProcessRequestSchema,
            request: req,
            responseSchema: pb.KillProcessResponseSchema,
          },
          async (em) =>
            create(pb.KillProcessResponseSchema, {
              process: toProto(await processes.kill(em, { key: req.key }, "", req.id)),
            }),
        ),
      );
    },

    async getProcess(req, ctx) {
      const process = await processes.get(db.em(), readTenant(ctx, req.tenantId), req.id);
      return create(pb.GetProcessResponseSchema, { process: toProto(process) });
    },

    async listProcesses(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const filter = { licenseId: req.licenseId, machineId: req.machineId };
      const page = pages.read(req.pageSize, req.pageToken, { list: procedureOf(ctx), tenantId, filters: filter });
      const { items, nextPageToken } = pages.pageOf(
        await reads.run((em) => processes.list(em, tenantId, page, filter)),
        page,
      );
      return create(pb.ListProcessesResponseSchema, { processes: items.map(toProto), nextPageToken });
    },
  };
}
