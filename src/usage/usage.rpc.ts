import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import * as pb from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { AnomalySchema, UsageEventSchema, Aggregation as PbAggregation, LimitPeriod as PbPeriod, MeterSchema, Severity as PbSeverity, type UsageEvent } from "../../gen/ts/licensd/usage/v1/usage_pb.js";
import { peerAddressKey, principalKey } from "../platform/context.js";
import type { Database } from "../platform/db.js";
import { DomainError, invalidArgument } from "../platform/errors.js";
import { Code } from "@connectrpc/connect";
import type { Idempotency } from "../platform/idempotency.js";
import { invalidPageToken, type PageTokens } from "../platform/pagination.js";
import { procedureOf, readTenant, tenantMutation } from "../platform/rpc.js";
import { requireTenant, type Principal } from "../platform/auth.js";
import type { AnomalyRow, AnomalyService } from "./anomaly.service.js";
import type { Severity } from "./anomaly.js";
import type { Meter, Aggregation, LimitPeriod } from "./meter.entity.js";
import type { MeterService } from "./meter.service.js";
import type { BatchResult, IncomingEvent, IngestService, KeyGuard, LimitState } from "./ingest.service.js";
import type { KeyFailureLimit } from "../platform/key-failures.js";
import { chunksOf, writeInOrder } from "./stream-writer.js";
import { seriesOf, type BucketSize, type UsageQueries } from "./usage.query.js";
import { int64Total } from "./usage-records.js";

const AGGREGATIONS: [Aggregation, PbAggregation][] = [
  ["sum", PbAggregation.SUM],
  ["count", PbAggregation.COUNT],
  ["max", PbAggregation.MAX],
  ["min", PbAggregation.MIN],
  ["unique_count", PbAggregation.UNIQUE_COUNT],
  ["latest", PbAggregation.LATEST],
];
const PERIODS: [LimitPeriod, PbPeriod][] = [
  ["month", PbPeriod.MONTH],
  ["day", PbPeriod.DAY],
  ["license_term", PbPeriod.LICENSE_TERM],
];
const aggregationToProto = (a: Aggregation) => AGGREGATIONS.find(([d]) => d === a)![1];
const periodFromProto = (p: PbPeriod): LimitPeriod => PERIODS.find(([, x]) => x === p)?.[0] ?? "month";

const meterToProto = (m: Meter) =>
  create(MeterSchema, {
    id: m.id,
    tenantId: m.tenantId,
    productId: m.productId,
    metric: m.metric,
    aggregation: aggregationToProto(m.aggregation),
    uniqueAttribute: m.uniqueAttribute,
    period: PERIODS.find(([d]) => d === m.period)![1],
    description: m.description,
    agentTokens: m.agentTokens,
    createTime: timestampFromDate(m.createdAt),
    updateTime: timestampFromDate(m.updatedAt),
  });

const limitToProto = (l: LimitState) => ({
  licenseId: l.licenseId,
  metric: l.metric,
  agentId: l.agentId,
  used: l.used,
  limit: l.limit,
  allowed: l.allowed,
  warning: l.warning,
  exceeded: l.exceeded,
  periodStart: timestampFromDate(l.periodStart),
  periodEnd: l.periodEnd ? timestampFromDate(l.periodEnd) : undefined,
});

/** A request's event as ingestion reads it: the decoded message itself (an absent one: all fields empty). */
const NO_EVENT = create(UsageEventSchema);
const incoming = (e: UsageEvent | undefined): IncomingEvent => e ?? NO_EVENT;

/** A rejected single event becomes the error a unary call answers with. */
/** The code a rejected single event answers with, by reason; anything else is INVALID_ARGUMENT. */
const REJECTION_CODES: Record<string, Code> = {
  LIMIT_EXCEEDED: Code.FailedPrecondition,
  LICENSE_SUSPENDED: Code.FailedPrecondition,
  LICENSE_REVOKED: Code.FailedPrecondition,
  LICENSE_EXPIRED: Code.FailedPrecondition,
  AGENT_DISABLED: Code.FailedPrecondition,
  INVALID_LICENSE_KEY: Code.Unauthenticated,
  INVALID_LEASE: Code.Unauthenticated,
  UNAUTHENTICATED: Code.Unauthenticated,
  SCOPE_REQUIRED: Code.PermissionDenied,
  LICENSE_NOT_FOUND: Code.NotFound,
};

function rejectionError(reason: string, message: string): DomainError {
  const field = /^([a-z_.]+):/.exec(message)?.[1] ?? "event";
  return new DomainError(REJECTION_CODES[reason] ?? Code.InvalidArgument, reason, `event.${message}`, { field: `event.${field}` });
}

const SEVERITIES: [Severity, PbSeverity][] = [
  ["medium", PbSeverity.MEDIUM],
  ["high", PbSeverity.HIGH],
  ["critical", PbSeverity.CRITICAL],
];
const ms = (v: string | null) => (v === null ? undefined : timestampFromDate(new Date(Number(v))));
const anomalyToProto = (a: AnomalyRow) =>
  create(AnomalySchema, {
    id: a.id,
    tenantId: a.tenant_id,
    licenseId: a.license_id,
    metric: a.metric,
    day: ms(a.day_ms),
    value: int64Total(a.value),
    mean: a.mean,
    stddev: a.stddev,
    zScore: a.z_score,
    severity: SEVERITIES.find(([d]) => d === a.severity)![1],
    resolved: a.resolved,
    resolver: a.resolver,
    resolutionNote: a.resolution_note,
    resolveTime: ms(a.resolved_ms),
    createTime: ms(a.created_ms),
  });

/** The Connect implementation of licensd.usage.v1.UsageService. */
export function createUsageRpc(deps: {
  db: Database;
  idempotency: Idempotency;
  meters: MeterService;
  ingest: IngestService;
  queries: UsageQueries;
  anomalies: AnomalyService;
  pages: PageTokens;
  keyFailures: KeyFailureLimit;
}): ServiceImpl<typeof pb.UsageService> {
  const { db, idempotency, meters, ingest, queries, anomalies, pages, keyFailures } = deps;
  const principal = (ctx: HandlerContext) => ctx.values.get(principalKey);
  /** Events naming licenses by key draw on the caller's address's failure budget. */
  const keyGuard = (ctx: HandlerContext): KeyGuard => {
    const address = ctx.values.get(peerAddressKey);
    return { refuseIfBlocked: () => keyFailures.refuseIfBlocked(address), failed: (n) => keyFailures.failed(address, n) };
  };

  return {
    createMeter: (req, ctx) =>
      tenantMutation(idempotency, ctx, { requestSchema: pb.CreateMeterRequestSchema, request: req, responseSchema: pb.CreateMeterResponseSchema }, async (em, m) => {
        const meter = await meters.createMeter(em, m.tenantId, m.actor, {
          productId: req.productId,
          metric: req.metric,
          aggregation: AGGREGATIONS.find(([, p]) => p === req.aggregation)![0],
          uniqueAttribute: req.uniqueAttribute,
          period: periodFromProto(req.period),
          description: req.description,
          agentTokens: req.agentTokens,
        });
        return create(pb.CreateMeterResponseSchema, { meter: meterToProto(meter) });
      }),
    async getMeter(req, ctx) {
      return create(pb.GetMeterResponseSchema, { meter: meterToProto(await meters.getMeter(db.em(), readTenant(ctx, req.tenantId), req.id)) });
    },
    async listMeters(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const page = pages.read(req.pageSize, req.pageToken, { list: procedureOf(ctx), tenantId, filters: { productId: req.productId } });
      const { items, nextPageToken } = pages.pageOf(await meters.list(db.em(), tenantId, page, req.productId), page);
      return create(pb.ListMetersResponseSchema, { meters: items.map(meterToProto), nextPageToken });
    },
    updateMeter: (req, ctx) => {
      const paths = req.updateMask?.paths ?? [];
      const bad = paths.find((p) => p !== "period" && p !== "description" && p !== "agent_tokens");
      if (bad !== undefined || paths.length === 0) throw invalidArgument("update_mask", `${JSON.stringify(bad ?? "")} is not updatable (period, description, agent_tokens are)`);
      return tenantMutation(idempotency, ctx, { requestSchema: pb.UpdateMeterRequestSchema, request: req, responseSchema: pb.UpdateMeterResponseSchema }, async (em, m) => {
        const meter = await meters.updateMeter(em, m.tenantId, m.actor, req.id, {
          period: paths.includes("period") ? periodFromProto(req.period) : undefined,
          description: paths.includes("description") ? req.description : undefined,
          agentTokens: paths.includes("agent_tokens") ? req.agentTokens : undefined,
        });
        return create(pb.UpdateMeterResponseSchema, { meter: meterToProto(meter) });
      });
    },
    deleteMeter: (req, ctx) =>
      tenantMutation(idempotency, ctx, { requestSchema: pb.DeleteMeterRequestSchema, request: req, responseSchema: pb.DeleteMeterResponseSchema }, async (em, m) =>
        create(pb.DeleteMeterResponseSchema, { meter: meterToProto(await meters.deleteMeter(em, m.tenantId, m.actor, req.id)) }),
      ),

    async recordUsage(req, ctx) {
      const result = await ingest.ingest([incoming(req.event)], principal(ctx), { requireKey: false, keyGuard: keyGuard(ctx) });
      const [rejection] = result.rejected;
      if (rejection) throw rejectionError(rejection.reason, rejection.message);
      const [limit, agentLimit] = [result.limits.find((l) => !l.agentId), result.limits.find((l) => l.agentId)];
      return create(pb.RecordUsageResponseSchema, { duplicate: result.duplicates > 0, limit: limit && limitToProto(limit), agentLimit: agentLimit && limitToProto(agentLimit) });
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
      // Each ack goes out, in order, after its batch committed.
      const batches = (async function* () {
        for await (const batch of requests) yield { id: batch.batchId, events: batch.events.map(incoming) };
      })();
      for await (const { id, result: r } of writeInOrder(ingest, principal(ctx), batches, keyGuard(ctx))) {
        yield create(pb.StreamUsageResponseSchema, { batchId: id, accepted: r.accepted, duplicates: r.duplicates, rejected: r.rejected, limits: r.limits.map(limitToProto) });
      }
    },

    async getQuota(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      return create(pb.GetQuotaResponseSchema, { limits: (await queries.quota(db.em(), tenantId, req.licenseId, req.metric)).map(limitToProto) });
    },

    async getUsageSummary(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const bucket: BucketSize = req.bucket === pb.Bucket.HOUR ? "hour" : req.bucket === pb.Bucket.MONTH ? "month" : "day";
      const s = await queries.summary(db.em(), { tenantId, licenseId: req.licenseId, customerId: req.customerId, metric: req.metric, start: timestampDate(req.startTime!), end: timestampDate(req.endTime!), bucket, byAgent: req.groupByAgent });
      const aggregation = aggregationToProto(s.aggregation);
      if (req.layout === pb.SummaryLayout.SERIES) {
        const { startsMs, series } = seriesOf(s.buckets);
        return create(pb.GetUsageSummaryResponseSchema, { aggregation, total: s.total, bucketStarts: startsMs.map(timestampFromMs), series });
      }
      // Thousands of buckets: each is written as its message (protobuf-es messages are plain
      // objects with a $typeName, every field set) instead of an init object that create()
      // then copies, with a Date and a Timestamp made on the way. Fewer objects per call mean
      // shorter young-generation collections under load.
      const buckets = s.buckets.map(([ms, agentId, value, events]): pb.UsageBucket => ({
        $typeName: "licensd.usage.v1.UsageBucket",
        startTime: { $typeName: "google.protobuf.Timestamp", seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 },
        agentId,
        value: int64Total(value ?? 0n),
        events: int64Total(events),
      }));
      return create(pb.GetUsageSummaryResponseSchema, { aggregation, buckets, total: s.total });
    },

    async detectAnomalies(req, ctx) {
      const tenantId = requireTenant(principal(ctx), req.tenantId, "admin");
      const day = req.day ? timestampDate(req.day) : undefined;
      return create(pb.DetectAnomaliesResponseSchema, { anomalies: (await anomalies.detect(day, tenantId)).map(anomalyToProto) });
    },

    async listAnomalies(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const page = pages.read(req.pageSize, req.pageToken, { list: procedureOf(ctx), tenantId, filters: { licenseId: req.licenseId, minSeverity: req.minSeverity, resolution: req.resolution } });
      const rows = await anomalies.list(db.em(), {
        tenantId,
        licenseId: req.licenseId,
        minSeverity: SEVERITIES.find(([, p]) => p === req.minSeverity)?.[0] ?? null,
        resolved: req.resolution === pb.ResolutionFilter.RESOLVED ? true : req.resolution === pb.ResolutionFilter.UNRESOLVED ? false : null,
        page,
      });
      const { items, nextPageToken } = pages.pageOf(rows, page);
      return create(pb.ListAnomaliesResponseSchema, { anomalies: items.map(anomalyToProto), nextPageToken });
    },

    resolveAnomaly: (req, ctx) =>
      tenantMutation(idempotency, ctx, { requestSchema: pb.ResolveAnomalyRequestSchema, request: req, responseSchema: pb.ResolveAnomalyResponseSchema }, async (em, m) =>
        create(pb.ResolveAnomalyResponseSchema, { anomaly: anomalyToProto(await anomalies.resolve(em, m.tenantId, m.actor, req.id, req.note)) }),
      ),

    async listUsageEvents(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const page = pages.read(req.pageSize, req.pageToken, { list: procedureOf(ctx), tenantId, filters: { licenseId: req.licenseId, metric: req.metric } });
      let after: { ts: number; received: number; key: string } | undefined;
      if (page.after) {
        const [ts, received, ...key] = page.after.split("|");
        after = { ts: Number(ts), received: Number(received), key: key.join("|") };
        // Issued by this server (the token is MACed), but perhaps by a release with another cursor format.
        if (!Number.isSafeInteger(after.ts) || !Number.isSafeInteger(after.received)) throw invalidPageToken();
      }
      const rows = await queries.events(db.em(), { tenantId, licenseId: req.licenseId, metric: req.metric, size: page.size, after });
      const { items, nextPageToken } = pages.pageBy(rows, page, (r) => `${r.ts_ms}|${r.received_ms}|${r.idempotency_key}`);
      return create(pb.ListUsageEventsResponseSchema, {
        events: items.map((r) => ({
          licenseId: req.licenseId,
          metric: r.metric,
          quantity: BigInt(r.quantity),
          time: timestampFromDate(new Date(Number(r.ts_ms))),
          idempotencyKey: r.idempotency_key,
          agentId: r.agent_id,
          attributes: r.attributes,
          receiveTime: timestampFromDate(new Date(Number(r.received_ms))),
        })),
        nextPageToken,
      });
    },
  };
}
