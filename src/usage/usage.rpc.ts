import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import * as pb from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { peerAddressKey, principalKey } from "../platform/context.js";
import type { Database } from "../platform/db.js";
import type { ReplicaReads } from "../platform/replicas.js";
import { invalidArgument } from "../platform/errors.js";
import { untilAborted } from "../platform/interrupt.js";
import type { Idempotency } from "../platform/idempotency.js";
import { invalidPageToken, type PageTokens } from "../platform/pagination.js";
import { procedureOf, readTenant, tenantMutation } from "../platform/rpc.js";
import { requireTenant } from "../platform/auth.js";
import type { AnomalyService } from "./anomaly.service.js";
import type { MeterService } from "./meter.service.js";
import type { IngestService, KeyGuard } from "./ingest.service.js";
import type { KeyFailureLimit } from "../platform/key-failures.js";
import { chunksOf, writeInOrder } from "./stream-writer.js";
import { seriesOf, type BucketSize, type UsageQueries } from "./usage.query.js";
import {
  aggregationFromProto,
  aggregationToProto,
  anomalyToProto,
  incoming,
  limitToProto,
  meterToProto,
  periodFromProto,
  rejectionError,
  severityFromProto,
  summaryBucketsToProto,
  usageEventToProto,
} from "./usage.mapper.js";

/** The Connect implementation of licensd.usage.v1.UsageService. */
export function createUsageRpc(deps: {
  db: Database;
  /** Lists and other reads that tolerate bounded staleness (docs/replicas.md). */
  reads: ReplicaReads;
  idempotency: Idempotency;
  meters: MeterService;
  ingest: IngestService;
  queries: UsageQueries;
  anomalies: AnomalyService;
  pages: PageTokens;
  keyFailures: KeyFailureLimit;
}): ServiceImpl<typeof pb.UsageService> {
  const { db, reads, idempotency, meters, ingest, queries, anomalies, pages, keyFailures } = deps;
  const principal = (ctx: HandlerContext) => ctx.values.get(principalKey);
  /** Events naming licenses by key draw on the caller's address's failure budget. */
  const keyGuard = (ctx: HandlerContext): KeyGuard => {
    const address = ctx.values.get(peerAddressKey);
    return {
      refuseIfBlocked: () => keyFailures.refuseIfBlocked(address),
      failed: (n) => keyFailures.failed(address, n),
    };
  };

  return {
    createMeter: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        { requestSchema: pb.CreateMeterRequestSchema, request: req, responseSchema: pb.CreateMeterResponseSchema },
        async (em, m) => {
          const meter = await meters.createMeter(em, m.tenantId, m.actor, {
            productId: req.productId,
            metric: req.metric,
            aggregation: aggregationFromProto(req.aggregation),
            uniqueAttribute: req.uniqueAttribute,
            period: periodFromProto(req.period),
            description: req.description,
            agentTokens: req.agentTokens,
          });
          return create(pb.CreateMeterResponseSchema, { meter: meterToProto(meter) });
        },
      ),
    async getMeter(req, ctx) {
      return create(pb.GetMeterResponseSchema, {
        meter: meterToProto(await meters.getMeter(db.em(), readTenant(ctx, req.tenantId), req.id)),
      });
    },
    async listMeters(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const page = pages.read(req.pageSize, req.pageToken, {
        list: procedureOf(ctx),
        tenantId,
        filters: { productId: req.productId },
      });
      const { items, nextPageToken } = pages.pageOf(
        await reads.run((em) => meters.list(em, tenantId, page, req.productId)),
        page,
      );
      return create(pb.ListMetersResponseSchema, { meters: items.map(meterToProto), nextPageToken });
    },
    updateMeter: (req, ctx) => {
      const paths = req.updateMask?.paths ?? [];
      const bad = paths.find((p) => p !== "period" && p !== "description" && p !== "agent_tokens");
      if (bad !== undefined || paths.length === 0)
        throw invalidArgument(
          "update_mask",
          `${JSON.stringify(bad ?? "")} is not updatable (period, description, agent_tokens are)`,
        );
      return tenantMutation(
        idempotency,
        ctx,
        { requestSchema: pb.UpdateMeterRequestSchema, request: req, responseSchema: pb.UpdateMeterResponseSchema },
        async (em, m) => {
          const meter = await meters.updateMeter(em, m.tenantId, m.actor, req.id, {
            period: paths.includes("period") ? periodFromProto(req.period) : undefined,
            description: paths.includes("description") ? req.description : undefined,
            agentTokens: paths.includes("agent_tokens") ? req.agentTokens : undefined,
          });
          return create(pb.UpdateMeterResponseSchema, { meter: meterToProto(meter) });
        },
      );
    },
    deleteMeter: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        { requestSchema: pb.DeleteMeterRequestSchema, request: req, responseSchema: pb.DeleteMeterResponseSchema },
        async (em, m) =>
          create(pb.DeleteMeterResponseSchema, {
            meter: meterToProto(await meters.deleteMeter(em, m.tenantId, m.actor, req.id)),
          }),
      ),

    async recordUsage(req, ctx) {
      const result = await ingest.ingest([incoming(req.event)], principal(ctx), {
        requireKey: false,
        keyGuard: keyGuard(ctx),
      });
      const [rejection] = result.rejected;
      if (rejection) throw rejectionError(rejection.reason, rejection.message);
      const [limit, agentLimit] = [result.limits.find((l) => !l.agentId), result.limits.find((l) => l.agentId)];
      return create(pb.RecordUsageResponseSchema, {
        duplicate: result.duplicates > 0,
        limit: limit && limitToProto(limit),
        agentLimit: agentLimit && limitToProto(agentLimit),
      });
    },

    async ingestUsage(requests, ctx) {
      // Events are written in chunks as they arrive, as StreamUsage writes batches (chunks
      // read while earlier ones commit); the summary comes after the last commit.
      const chunks = chunksOf(requests, (req) => incoming(req.event));
      const out = { accepted: 0n, duplicates: 0n, rejected: [] as pb.IngestUsageResponse["rejected"] };
      for await (const { id: offset, result: r } of writeInOrder(ingest, principal(ctx), chunks, keyGuard(ctx))) {
        out.accepted += BigInt(r.accepted);
        out.duplicates += BigInt(r.duplicates);
        out.rejected.push(...r.rejected.map((x) => ({ ...x, index: x.index + offset }) as never));
      }
      return create(pb.IngestUsageResponseSchema, out);
    },

    async *streamUsage(requests, ctx) {
      // Each ack goes out, in order, after its batch committed. On shutdown no further batch is read; the ones read are
      // acknowledged, then the stream ends UNAVAILABLE so the client resends the rest elsewhere.
      const batches = (async function* () {
        for await (const batch of untilAborted(requests, ctx.signal))
          yield { id: batch.batchId, events: batch.events.map(incoming) };
      })();
      for await (const { id, result: r } of writeInOrder(ingest, principal(ctx), batches, keyGuard(ctx))) {
        yield create(pb.StreamUsageResponseSchema, {
          batchId: id,
          accepted: r.accepted,
          duplicates: r.duplicates,
          rejected: r.rejected,
          limits: r.limits.map(limitToProto),
        });
      }
      if (ctx.signal.aborted) throw ConnectError.from(ctx.signal.reason, Code.Unavailable);
    },

    async getQuota(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      return create(pb.GetQuotaResponseSchema, {
        limits: (await queries.quota(db.em(), tenantId, req.licenseId, req.metric)).map(limitToProto),
      });
    },

    async getUsageSummary(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const bucket: BucketSize =
        req.bucket === pb.Bucket.HOUR ? "hour" : req.bucket === pb.Bucket.MONTH ? "month" : "day";
      const s = await reads.run((em) =>
        queries.summary(em, {
          tenantId,
          licenseId: req.licenseId,
          customerId: req.customerId,
          metric: req.metric,
          start: timestampDate(req.startTime!),
          end: timestampDate(req.endTime!),
          bucket,
          byAgent: req.groupByAgent,
        }),
      );
      const aggregation = aggregationToProto(s.aggregation);
      if (req.layout === pb.SummaryLayout.SERIES) {
        const { startsMs, series } = seriesOf(s.buckets);
        return create(pb.GetUsageSummaryResponseSchema, {
          aggregation,
          total: s.total,
          bucketStarts: startsMs.map(timestampFromMs),
          series,
        });
      }
      return create(pb.GetUsageSummaryResponseSchema, {
        aggregation,
        buckets: summaryBucketsToProto(s.buckets),
        total: s.total,
      });
    },

    async detectAnomalies(req, ctx) {
      const tenantId = requireTenant(principal(ctx), req.tenantId, "admin");
      const day = req.day ? timestampDate(req.day) : undefined;
      return create(pb.DetectAnomaliesResponseSchema, {
        anomalies: (await anomalies.detect(day, tenantId)).map(anomalyToProto),
      });
    },

    async listAnomalies(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const page = pages.read(req.pageSize, req.pageToken, {
        list: procedureOf(ctx),
        tenantId,
        filters: { licenseId: req.licenseId, minSeverity: req.minSeverity, resolution: req.resolution },
      });
      const rows = await reads.run((em) =>
        anomalies.list(em, {
          tenantId,
          licenseId: req.licenseId,
          minSeverity: severityFromProto(req.minSeverity),
          resolved:
            req.resolution === pb.ResolutionFilter.RESOLVED
              ? true
              : req.resolution === pb.ResolutionFilter.UNRESOLVED
                ? false
                : null,
          page,
        }),
      );
      const { items, nextPageToken } = pages.pageOf(rows, page);
      return create(pb.ListAnomaliesResponseSchema, { anomalies: items.map(anomalyToProto), nextPageToken });
    },

    resolveAnomaly: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.ResolveAnomalyRequestSchema,
          request: req,
          responseSchema: pb.ResolveAnomalyResponseSchema,
        },
        async (em, m) =>
          create(pb.ResolveAnomalyResponseSchema, {
            anomaly: anomalyToProto(await anomalies.resolve(em, m.tenantId, m.actor, req.id, req.note)),
          }),
      ),

    async listUsageEvents(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const page = pages.read(req.pageSize, req.pageToken, {
        list: procedureOf(ctx),
        tenantId,
        filters: { licenseId: req.licenseId, metric: req.metric },
      });
      let after: { ts: number; received: number; key: string } | undefined;
      if (page.after) {
        const [ts, received, ...key] = page.after.split("|");
        after = { ts: Number(ts), received: Number(received), key: key.join("|") };
        // Issued by this server (the token is MACed), but perhaps by a release with another cursor format.
        if (!Number.isSafeInteger(after.ts) || !Number.isSafeInteger(after.received)) throw invalidPageToken();
      }
      const rows = await reads.run((em) =>
        queries.events(em, {
          tenantId,
          licenseId: req.licenseId,
          metric: req.metric,
          size: page.size,
          after,
        }),
      );
      const { items, nextPageToken } = pages.pageBy(
        rows,
        page,
        (r) => `${r.ts_ms}|${r.received_ms}|${r.idempotency_key}`,
      );
      return create(pb.ListUsageEventsResponseSchema, {
        events: items.map((r) => usageEventToProto(req.licenseId, r)),
        nextPageToken,
      });
    },
  };
}
