import type { Clock } from "../platform/clock.js";
import { sql, type EntityManager } from "../platform/db.js";
import { invalidArgument, notFound } from "../platform/errors.js";
import type { Aggregation } from "./meter.entity.js";
import type { IngestService } from "./ingest.service.js";
import { int64Total, limitState, periodOf, type LimitState } from "./usage-records.js";
import { byCodePoint } from "../platform/order.js";

export type BucketSize = "hour" | "day" | "month";

/** One summary bucket: [start (epoch ms), agent id ("" unless grouped by agent), value (null: none), events]. */
export type SummaryBucket = [startMs: number, agentId: string, value: string | null, events: string];

/** A summary laid out as series: each bucket's start once, and per agent its values and events lined up with them. */
export interface SummarySeries {
  startsMs: number[];
  series: { agentId: string; values: bigint[]; events: bigint[] }[];
}

/**
 * The series layout of buckets in time order (then by agent): a column per agent, in
 * code-point order of the ids, with a 0 (and 0 events) where an agent had no usage in a
 * bucket another agent used.
 */
export function seriesOf(buckets: readonly SummaryBucket[]): SummarySeries {
  const agents = [...new Set(buckets.map((b) => b[1]))].sort(byCodePoint);
  const column = new Map(agents.map((agentId, i) => [agentId, i]));
  const series = agents.map((agentId) => ({ agentId, values: [] as bigint[], events: [] as bigint[] }));
  const startsMs: number[] = [];
  for (const [ms, agentId, value, events] of buckets) {
    if (startsMs[startsMs.length - 1] !== ms) {
      startsMs.push(ms);
      for (const s of series) {
        s.values.push(0n);
        s.events.push(0n);
      }
    }
    const s = series[column.get(agentId)!]!;
    s.values[startsMs.length - 1] = int64Total(value ?? 0n);
    s.events[startsMs.length - 1] = int64Total(events);
  }
  return { startsMs, series };
}

/** The SQL that aggregates rollup rows into one value, per meter aggregation. */
const ROLLUP_VALUE: Record<Exclude<Aggregation, "unique_count">, string> = {
  sum: "sum(total)",
  count: "sum(events)",
  max: "max(max)",
  min: "min(min)",
  latest: "(array_agg(latest order by latest_ts desc))[1]",
};

/** The same, for one rollup row (one license, meter, hour and agent). */
const ROLLUP_ROW_VALUE: Record<Exclude<Aggregation, "unique_count">, string> = {
  sum: "total",
  count: "events",
  max: "max",
  min: "min",
  latest: "latest",
};

/** Reads of usage: quotas from the period totals, summaries from the hourly rollups — never from raw events. */
export function createUsageQueries(deps: { clock: Clock; ingest: IngestService }) {
  const { clock, ingest } = deps;

  /**
   * The licenses a summary covers (one, or all of a customer's), with the meters of their
   * products that have `metric`: one query (a left join, so a license whose product lacks
   * the meter still counts as found).
   */
  async function summaryScope(
    em: EntityManager,
    tenantId: string,
    licenseId: string,
    customerId: string,
    metric: string,
  ): Promise<{ ids: string[]; meters: { id: string; aggregation: Aggregation }[] }> {
    if (!licenseId === !customerId)
      throw invalidArgument(licenseId ? "customer_id" : "license_id", "give license_id or customer_id (one of them)");
    const rows = await sql<{ id: string; meter_id: string | null; aggregation: Aggregation | null }>(
      em,
      `select l.id, m.id as meter_id, m.aggregation
         from licenses l
         left join meters m on m.product_id = l.product_id and m.tenant_id = l.tenant_id and m.metric = $1
        where l.tenant_id = $2 and ${licenseId ? "l.id = $3" : "l.customer_id = $3"} order by l.id`,
      [metric, tenantId, licenseId || customerId],
    );
    if (licenseId && rows.length === 0) throw notFound("license", licenseId);
    if (customerId && rows.length === 0) {
      const [c] = await sql<{ id: string }>(em, `select id from customers where tenant_id = $1 and id = $2`, [
        tenantId,
        customerId,
      ]);
      if (!c) throw notFound("customer", customerId);
    }
    const meters = new Map<string, Aggregation>();
    for (const r of rows) if (r.meter_id) meters.set(r.meter_id, r.aggregation!);
    return { ids: rows.map((r) => r.id), meters: [...meters].map(([id, aggregation]) => ({ id, aggregation })) };
  }

  /** Appends `values` to `params` and returns their placeholders (`$3, $4, …`) for an IN list. */
  const list = (params: unknown[], values: readonly unknown[]) => values.map((v) => `$${params.push(v)}`).join(", ");

  return {
    /** Used, limit and remaining for each metric of the license in the current period. */
    async quota(em: EntityManager, tenantId: string, licenseId: string, metric: string): Promise<LimitState[]> {
      const look = ingest.lookups();
      const license = await look.byId(licenseId);
      if (!license || license.tenantId !== tenantId) throw notFound("license", licenseId);
      const meters = [...(await look.meters(license.productId, license.tenantId)).values()]
        .filter((m) => !metric || m.metric === metric)
        .sort((a, b) => byCodePoint(a.metric, b.metric));
      if (metric && meters.length === 0) throw notFound("meter", metric);
      const now = clock.now();
      const out: LimitState[] = [];
      for (const meter of meters) {
        const period = periodOf(meter.period, now, license);
        const rows = await sql<{ agent_id: string; used: string | null }>(
          em,
          `select agent_id, used from usage_periods where license_id = $1 and meter_id = $2 and period_start = $3`,
          [license.id, meter.id, period.start],
        );
        const usedBy = new Map(rows.map((r) => [r.agent_id, r.used === null ? 0n : BigInt(r.used)]));
        out.push(limitState(license, meter, usedBy.get("") ?? 0n, period));
        if (!meter.agentTokens) continue;
        // Each agent the license names; those without a period row yet (the meter started
        // counting agent tokens this period and they have not sent since) from the rollups, in one query.
        const agents = [...license.agentTokens.keys()].sort();
        const missing = agents.filter((a) => !usedBy.has(a));
        if (missing.length > 0) {
          const params: unknown[] = [license.id, meter.id];
          const agentIn = list(params, missing);
          const from = list(params, [period.start]);
          const to = period.end ? ` and hour < ${list(params, [period.end])}` : "";
          const rows = await sql<{ agent_id: string; used: string | null }>(
            em,
            `select agent_id, sum(total) as used from usage_rollups
              where license_id = $1 and meter_id = $2 and agent_id in (${agentIn}) and hour >= ${from}${to}
              group by agent_id`,
            params,
          );
          for (const r of rows) usedBy.set(r.agent_id, r.used === null ? 0n : BigInt(r.used));
        }
        for (const agentId of agents) out.push(limitState(license, meter, usedBy.get(agentId) ?? 0n, period, agentId));
      }
      return out;
    },

    /** Buckets of one metric over a range, for a license or every license of a customer. */
    async summary(
      em: EntityManager,
      q: {
        tenantId: string;
        licenseId: string;
        customerId: string;
        metric: string;
        start: Date;
        end: Date;
        bucket: BucketSize;
        byAgent: boolean;
      },
    ) {
      if (q.end <= q.start) throw invalidArgument("end_time", "must be after start_time");
      const { meters, ...scope } = await summaryScope(em, q.tenantId, q.licenseId, q.customerId, q.metric);
      if (q.licenseId && meters.length === 0) throw notFound("meter", q.metric);
      const aggregation: Aggregation = meters[0]?.aggregation ?? "sum";
      if (meters.length === 0 || scope.ids.length === 0) return { aggregation, buckets: [], total: 0n };
      const start = new Date(Math.floor(q.start.getTime() / 3_600_000) * 3_600_000);
      const params: unknown[] = [];
      const licenseIn = list(params, scope.ids);
      const meterIn = list(
        params,
        meters.map((m) => m.id),
      );
      const where = `license_id in (${licenseIn}) and meter_id in (${meterIn})
                     and hour >= ${list(params, [start])} and hour < ${list(params, [q.end])}`;
      const agent = q.byAgent ? ", agent_id" : "";
      // Rollup rows are hourly already: hour buckets need no truncation.
      const bucketExpr = q.bucket === "hour" ? "hour" : `date_trunc('${q.bucket}', hour, 'UTC')`;
      /** [start ms, agent id, value, events], as PostgreSQL sent it. */
      type Bucket = SummaryBucket;
      // The buckets come back as one string of numbers (start in epoch seconds, value,
      // events, comma-separated) and, grouped by agent, one JSON array of their agents, both
      // in the scan's order, and are sorted here: PostgreSQL takes a quarter of the time a
      // json_agg of sorted rows cost it (2,880 hourly rows: 2 ms against 8.5 ms), and one
      // string split is the cheapest decoding on this side. A null value travels as "".
      const bucketsOf = async (from: string): Promise<Bucket[]> => {
        const [row] = await sql<{ nums: string | null; agents: string[] | null }>(
          em,
          `select string_agg(date_part('epoch', b)::bigint || ',' || coalesce(value::text, '') || ',' || events, ',')
                  as nums${agent ? ", json_agg(agent_id) as agents" : ", null as agents"}
             from ${from}`,
          params,
        );
        if (!row?.nums) return [];
        const f = row.nums.split(",");
        const agents = row.agents;
        const out: Bucket[] = new Array(f.length / 3);
        for (let i = 0, j = 0; i < f.length; i += 3, j++)
          out[j] = [Number(f[i]) * 1000, agents ? agents[j]! : "", f[i + 1] === "" ? null : f[i + 1]!, f[i + 2]!];
        // in time order, then by agent in byte order (UTF-8 byte order is code point order)
        return out.sort((x, y) => x[0] - y[0] || byCodePoint(x[1], y[1]));
      };
      const grouped = (table: string, value: string, events: string) =>
        `(select ${bucketExpr} as b${agent}, ${value} as value, ${events} as events
            from ${table} where ${where} group by 1${agent ? ", 2" : ""}) g`;
      let buckets: Bucket[];
      let total: { value: string | null }[];
      if (aggregation === "unique_count") {
        const counts = await bucketsOf(grouped("usage_rollups", "0", "sum(events)"));
        const events = new Map(counts.map(([ms, agentId, , n]) => [`${ms}|${agentId}`, n]));
        buckets = (await bucketsOf(grouped("usage_unique", "count(distinct value)", "0"))).map(
          ([ms, agentId, value]) => [ms, agentId, value, events.get(`${ms}|${agentId}`) ?? "0"],
        );
        total = await sql(em, `select count(distinct value) as value from usage_unique where ${where}`, params);
      } else {
        const value = ROLLUP_VALUE[aggregation];
        // One license's one meter by hour and agent: each rollup row is a bucket as it stands.
        const asStored = q.bucket === "hour" && q.byAgent && scope.ids.length === 1 && meters.length === 1;
        buckets = await bucketsOf(
          asStored
            ? `(select hour as b, agent_id, ${ROLLUP_ROW_VALUE[aggregation]} as value, events
                  from usage_rollups where ${where}) g`
            : grouped("usage_rollups", value, "sum(events)"),
        );
        // The range's total follows from the buckets, except for LATEST (which needs the times).
        const values = buckets.map((b) => BigInt(b[2] ?? 0));
        const fold = {
          sum: (x: bigint, y: bigint) => x + y,
          count: (x: bigint, y: bigint) => x + y,
          max: (x: bigint, y: bigint) => (y > x ? y : x),
          min: (x: bigint, y: bigint) => (y < x ? y : x),
        };
        total =
          aggregation === "latest"
            ? await sql<{ value: string | null }>(
                em,
                `select ${value} as value from usage_rollups where ${where}`,
                params,
              )
            : [{ value: values.length === 0 ? null : values.reduce(fold[aggregation]).toString() }];
      }
      // The buckets stay as they were decoded: the RPC layer turns each into its message directly.
      return { aggregation, buckets, total: int64Total(total[0]?.value ?? 0n) };
    },

    /** Raw events of a license, newest first; `after` is the last row of the previous page. */
    async events(
      em: EntityManager,
      q: {
        tenantId: string;
        licenseId: string;
        metric: string;
        size: number;
        after?: { ts: number; received: number; key: string };
      },
    ) {
      const [lic] = await sql<{ product_id: string }>(
        em,
        `select product_id from licenses where tenant_id = $1 and id = $2`,
        [q.tenantId, q.licenseId],
      );
      if (!lic) throw notFound("license", q.licenseId);
      const conds = ["e.tenant_id = $1", "e.license_id = $2"];
      const params: unknown[] = [q.tenantId, q.licenseId];
      if (q.metric) conds.push(`m.metric = ${list(params, [q.metric])}`);
      if (q.after) {
        const after = list(params, [new Date(q.after.ts), new Date(q.after.received), q.after.key]);
        conds.push(`(e.ts, e.received_at, e.idempotency_key) < (${after})`);
      }
      type EventRow = {
        metric: string;
        quantity: string;
        ts_ms: string;
        received_ms: string;
        idempotency_key: string;
        agent_id: string;
        attributes: Record<string, string>;
      };
      return sql<EventRow>(
        em,
        `select m.metric, e.quantity, (extract(epoch from e.ts) * 1000)::bigint as ts_ms,
                (extract(epoch from e.received_at) * 1000)::bigint as received_ms,
                e.idempotency_key, e.agent_id, e.attributes
           from usage_events e join meters m on m.id = e.meter_id
          where ${conds.join(" and ")}
          order by e.ts desc, e.received_at desc, e.idempotency_key desc limit ${q.size + 1}`,
        params,
      );
    },
  };
}

export type UsageQueries = ReturnType<typeof createUsageQueries>;
