import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type AuditService as AuditServiceDesc,
  GetAuditEventResponseSchema,
  GetCheckpointResponseSchema,
  GetConsistencyProofResponseSchema,
  GetInclusionProofResponseSchema,
  ListAuditEventsResponseSchema,
  ListOrder,
  PruneAuditLogRequestSchema,
  PruneAuditLogResponseSchema,
  TailAuditEventsResponseSchema,
  VerifyAuditChainResponseSchema,
} from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { requireTenant, type Principal } from "../platform/auth.js";
import { principalKey } from "../platform/context.js";
import { sql, type Database, type EntityManager, type SqlRunner } from "../platform/db.js";
import type { ReplicaReads } from "../platform/replicas.js";
import { invalidArgument, notFound } from "../platform/errors.js";
import { invalidPageToken, type PageTokens } from "../platform/pagination.js";
import type { Clock } from "../platform/clock.js";
import type { Idempotency } from "../platform/idempotency.js";
import { procedureOf, tenantMutation } from "../platform/rpc.js";
import { auditEventToProto, checkpointToProto, problemToProto } from "./audit.mapper.js";
import type { AuditService } from "./audit.service.js";

/** A seq or tree size from a request: int64 on the wire, a safe integer here (no log gets past 2^53 - 1 entries). */
function seqOf(field: string, value: bigint): number {
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER))
    throw invalidArgument(field, `must be 0 to ${Number.MAX_SAFE_INTEGER}`, "OUT_OF_RANGE");
  return Number(value);
}

/** The Connect implementation of licensd.audit.v1.AuditService. */
export function createAuditRpc(deps: {
  db: Database;
  /** Lists and other reads that tolerate bounded staleness (docs/replicas.md). */
  reads: ReplicaReads;
  clock: Clock;
  idempotency: Idempotency;
  audit: AuditService;
  keepAliveMs: number;
  pages: PageTokens;
  /**
   * Sequences the tenant's queued entries (events/sequencer.ts; never rejects): a change may answer before its entry
   * has its place (Activate's fast path, events.queuedSoon), so a read of the log settles the tenant first and reads
   * every change that has answered.
   */
  settle: (tenantId: string) => Promise<void>;
}): ServiceImpl<typeof AuditServiceDesc> {
  const { db, reads, clock, idempotency, audit, keepAliveMs, pages, settle } = deps;

  /** The tenant the call reads: read scope; the super-admin may name any tenant, deleted ones too. */
  async function tenantOf(on: SqlRunner, principal: Principal, tenantId: string): Promise<string> {
    const id = requireTenant(principal, tenantId, "read");
    if (principal.kind === "super_admin") {
      const rows = await sql(on, `select 1 from tenants where id = $1`, [id]);
      if (rows.length === 0) throw notFound("tenant", id);
    }
    return id;
  }

  /** A read of the log that tolerates bounded staleness: on a replica when one is fresh enough (docs/replicas.md). */
  const staleOk = <T>(
    ctx: HandlerContext,
    tenantId: string,
    read: (em: EntityManager, tenantId: string) => Promise<T>,
  ) =>
    reads.run(async (em) => {
      const id = await tenantOf(em, ctx.values.get(principalKey), tenantId);
      await settle(id);
      return read(em, id);
    });

  return {
    listAuditEvents: (req, ctx) =>
      staleOk(ctx, req.tenantId, async (em, tenantId) => {
        const filters = {
          subject: req.subject || undefined,
          typePrefix: req.typePrefix || undefined,
          actor: req.actor || undefined,
          start: req.startTime ? timestampDate(req.startTime) : undefined,
          end: req.endTime ? timestampDate(req.endTime) : undefined,
        };
        const newestFirst = req.order === ListOrder.NEWEST_FIRST;
        const page = pages.read(req.pageSize, req.pageToken, {
          list: procedureOf(ctx),
          tenantId,
          filters: { ...filters, newestFirst },
        });
        // Issued by this server (the token is MACed), but perhaps by a release with another cursor format.
        if (page.after !== undefined && !/^\d{1,15}$/.test(page.after)) throw invalidPageToken();
        const rows = await audit.list(em, tenantId, filters, page, newestFirst);
        const { items, nextPageToken } = pages.pageBy(rows, page, (e) => String(e.seq));
        return create(ListAuditEventsResponseSchema, { events: items.map(auditEventToProto), nextPageToken });
      }),

    getAuditEvent: (req, ctx) =>
      staleOk(ctx, req.tenantId, async (em, tenantId) =>
        create(GetAuditEventResponseSchema, { event: auditEventToProto(await audit.get(em, tenantId, req.id)) }),
      ),

    verifyAuditChain: (req, ctx) =>
      staleOk(ctx, req.tenantId, async (em, tenantId) => {
        const r = await audit.verify(em, tenantId, seqOf("start_seq", req.startSeq), seqOf("end_seq", req.endSeq));
        return create(VerifyAuditChainResponseSchema, {
          valid: r.valid,
          eventsChecked: BigInt(r.eventsChecked),
          firstBadSeq: BigInt(r.firstBadSeq),
          problem: problemToProto(r.problem),
          detail: r.detail,
          startSeq: BigInt(r.startSeq),
          endSeq: BigInt(r.endSeq),
        });
      }),

    // The tail follows the primary's NOTIFY: it reads the primary, where a notified entry is already visible.
    async *tailAuditEvents(req, ctx) {
      const tenantId = await tenantOf(db, ctx.values.get(principalKey), req.tenantId);
      await settle(tenantId);
      const stream = audit.tail(
        tenantId,
        {
          afterSeq: req.afterSeq === undefined ? undefined : seqOf("after_seq", req.afterSeq),
          filters: { subject: req.subject || undefined, typePrefix: req.typePrefix || undefined },
          keepAliveMs,
        },
        ctx.signal,
      );
      for await (const item of stream) {
        yield "event" in item
          ? create(TailAuditEventsResponseSchema, { message: { case: "event", value: auditEventToProto(item.event) } })
          : create(TailAuditEventsResponseSchema, {
              message: { case: "keepAlive", value: { lastSeq: BigInt(item.keepAlive) } },
            });
      }
    },

    getCheckpoint: (req, ctx) =>
      staleOk(ctx, req.tenantId, async (em, tenantId) =>
        create(GetCheckpointResponseSchema, { checkpoint: checkpointToProto(await audit.checkpoint(em, tenantId)) }),
      ),

    getInclusionProof: (req, ctx) =>
      staleOk(ctx, req.tenantId, async (em, tenantId) => {
        const p = await audit.inclusion(em, tenantId, seqOf("seq", req.seq), seqOf("tree_size", req.treeSize));
        return create(GetInclusionProofResponseSchema, {
          leafIndex: BigInt(p.leafIndex),
          treeSize: BigInt(p.treeSize),
          entryHash: p.entryHash,
          hashes: p.hashes,
        });
      }),

    getConsistencyProof: (req, ctx) =>
      staleOk(ctx, req.tenantId, async (em, tenantId) => {
        const p = await audit.consistency(em, tenantId, seqOf("old_size", req.oldSize), seqOf("new_size", req.newSize));
        return create(GetConsistencyProofResponseSchema, {
          oldSize: BigInt(p.oldSize),
          newSize: BigInt(p.newSize),
          hashes: p.hashes,
        });
      }),

    pruneAuditLog: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        { requestSchema: PruneAuditLogRequestSchema, request: req, responseSchema: PruneAuditLogResponseSchema },
        async (em, m) => {
          if (ctx.values.get(principalKey).kind === "super_admin") {
            const rows = await sql(em, `select 1 from tenants where id = $1`, [m.tenantId]);
            if (rows.length === 0) throw notFound("tenant", m.tenantId);
          }
          const cut = req.cut;
          if (cut.case === undefined) throw invalidArgument("cut", "give through_seq or older_than");
          const what =
            cut.case === "throughSeq"
              ? { throughSeq: seqOf("through_seq", cut.value) }
              : {
                  olderThan: new Date(
                    clock.now().getTime() - Number(cut.value.seconds) * 1000 - Math.floor(cut.value.nanos / 1e6),
                  ),
                };
          const r = await audit.prune(em, m.tenantId, m.actor, what);
          return create(PruneAuditLogResponseSchema, {
            removedCount: BigInt(r.removed),
            throughSeq: BigInt(r.throughSeq),
          });
        },
      ),
  };
}
