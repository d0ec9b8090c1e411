/* Usage's proto mapping: meters, limits, rejections, anomalies, summaries and events, both ways. */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import type { UsageBucket } from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import {
  AnomalySchema,
  UsageEventSchema,
  Aggregation as PbAggregation,
  LimitPeriod as PbPeriod,
  MeterSchema,
  Severity as PbSeverity,
  type UsageEvent,
} from "../../gen/ts/licensd/usage/v1/usage_pb.js";
import { DomainError } from "../platform/errors.js";
import type { AnomalyRow } from "./anomaly.service.js";
import type { Severity } from "./anomaly.js";
import type { IncomingEvent, LimitState } from "./ingest.service.js";
import type { Meter, Aggregation, LimitPeriod } from "./meter.entity.js";
import type { SummaryBucket, UsageQueries } from "./usage.query.js";
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
export const aggregationToProto = (a: Aggregation) => AGGREGATIONS.find(([d]) => d === a)![1];
export const periodFromProto = (p: PbPeriod): LimitPeriod => PERIODS.find(([, x]) => x === p)?.[0] ?? "month";

export const meterToProto = (m: Meter) =>
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

export const limitToProto = (l: LimitState) => ({
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
export const incoming = (e: UsageEvent | undefined): IncomingEvent => e ?? NO_EVENT;

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

export function rejectionError(reason: string, message: string): DomainError {
  const field = /^([a-z_.]+):/.exec(message)?.[1] ?? "event";
  return new DomainError(REJECTION_CODES[reason] ?? Code.InvalidArgument, reason, `event.${message}`, {
    field: `event.${field}`,
  });
}

const SEVERITIES: [Severity, PbSeverity][] = [
  ["medium", PbSeverity.MEDIUM],
  ["high", PbSeverity.HIGH],
  ["critical", PbSeverity.CRITICAL],
];
const ms = (v: string | null) => (v === null ? undefined : timestampFromDate(new Date(Number(v))));
export const anomalyToProto = (a: AnomalyRow) =>
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

export const aggregationFromProto = (p: PbAggregation): Aggregation => AGGREGATIONS.find(([, x]) => x === p)![0];
export const severityFromProto = (p: PbSeverity): Severity | null => SEVERITIES.find(([, x]) => x === p)?.[0] ?? null;

/**
 * A summary's buckets, each written as its message (protobuf-es messages are plain objects
 * with a $typeName, every field set) instead of an init object that create() then copies,
 * with a Date and a Timestamp made on the way: thousands of buckets make fewer objects per
 * call, so shorter young-generation collections under load.
 */
export const summaryBucketsToProto = (buckets: SummaryBucket[]) =>
  buckets.map(
    ([ms, agentId, value, events]): UsageBucket => ({
      $typeName: "licensd.usage.v1.UsageBucket",
      startTime: {
        $typeName: "google.protobuf.Timestamp",
        seconds: BigInt(Math.floor(ms / 1000)),
        nanos: (ms % 1000) * 1_000_000,
      },
      agentId,
      value: int64Total(value ?? 0n),
      events: int64Total(events),
    }),
  );

type UsageEventRow = Awaited<ReturnType<UsageQueries["events"]>>[number];

/** A stored usage event of `licenseId`, as ListUsageEvents answers it. */
export const usageEventToProto = (licenseId: string, r: UsageEventRow) => ({
  licenseId,
  metric: r.metric,
  quantity: BigInt(r.quantity),
  time: timestampFromDate(new Date(Number(r.ts_ms))),
  idempotencyKey: r.idempotency_key,
  agentId: r.agent_id,
  attributes: r.attributes,
  receiveTime: timestampFromDate(new Date(Number(r.received_ms))),
});
