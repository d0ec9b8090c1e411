/* `licensd meter …`, `licensd usage summary|events|quota`, `licensd anomaly …` (UsageService). */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { UsageService } from "@licensd/client";
import {
  AggregationSchema,
  type Anomaly,
  AnomalySchema,
  LimitPeriodSchema,
  type LimitState,
  MeterSchema,
  SeveritySchema,
} from "@licensd/client/gen/licensd/usage/v1/usage_pb.js";
import {
  BucketSchema,
  GetQuotaResponseSchema,
  GetUsageSummaryResponseSchema,
  ResolutionFilterSchema,
  StoredUsageEventSchema,
} from "@licensd/client/gen/licensd/usage/v1/usage_service_pb.js";
import type { Command } from "commander";
import {
  act,
  collectPages,
  enumText,
  idempotencyKey,
  type ListOptions,
  listOptions,
  mutationOptions,
  printList,
  time,
  updateMask,
} from "./command.js";
import { fieldsOf, messageJson, printJson, printRecord, printTable } from "./output.js";
import { enumParser, parseTime } from "./parse.js";
import { type Context, UsageError } from "./runtime.js";
import { usageSendCommand } from "./usage-send.js";

const showMeter = (ctx: Context, meter: Parameters<typeof fieldsOf<typeof MeterSchema>>[1] | undefined) =>
  ctx.json
    ? printJson({ meter: meter && messageJson(MeterSchema, meter) })
    : printRecord(ctx, fieldsOf(MeterSchema, meter!));

const limitColumns = [
  { header: "LICENSE", value: (l: LimitState) => l.licenseId },
  { header: "METRIC", value: (l: LimitState) => l.metric },
  { header: "AGENT", value: (l: LimitState) => l.agentId },
  { header: "USED", value: (l: LimitState) => String(l.used) },
  { header: "LIMIT", value: (l: LimitState) => (l.limit ? String(l.limit) : "unlimited") },
  {
    header: "STATE",
    value: (l: LimitState) => (l.exceeded ? "exceeded" : l.warning ? "warning" : "ok"),
    status: true,
  },
  { header: "PERIOD END", value: (l: LimitState) => time(l.periodEnd) },
];

export function usageCommands(program: Command): void {
  const meter = program.command("meter").description("meters: the usage metrics of a product and how they aggregate");
  mutationOptions(
    meter
      .command("create")
      .description("create a meter")
      .requiredOption("--product <id>", "product id (prod_…)")
      .requiredOption("--metric <name>", "the metric, e.g. tokens or api_calls")
      .requiredOption(
        "--aggregation <agg>",
        "sum, count, max, min, unique-count or latest",
        enumParser(AggregationSchema),
      )
      .option("--unique-attribute <name>", "for unique-count: the attribute whose distinct values count")
      .option("--period <period>", "month (default), day or license-term", enumParser(LimitPeriodSchema))
      .option("--description <text>", "what it measures")
      .option("--agent-tokens", "hold each agent to its token allowance too (sum meters)"),
  ).action(
    act<{
      product: string;
      metric: string;
      aggregation: number;
      uniqueAttribute?: string;
      period?: number;
      description?: string;
      agentTokens?: boolean;
      idempotencyKey?: string;
    }>(async (ctx, o) => {
      const res = await ctx.client(UsageService).createMeter({
        tenantId: ctx.tenant,
        productId: o.product,
        metric: o.metric,
        aggregation: o.aggregation,
        uniqueAttribute: o.uniqueAttribute ?? "",
        period: o.period,
        description: o.description ?? "",
        agentTokens: o.agentTokens === true,
        idempotencyKey: idempotencyKey(o),
      });
      showMeter(ctx, res.meter);
    }),
  );
  listOptions(meter.command("list").description("list meters").option("--product <id>", "only this product's")).action(
    act<ListOptions & { product?: string }>(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx
          .client(UsageService)
          .listMeters({ tenantId: ctx.tenant, productId: o.product ?? "", pageSize, pageToken });
        return { items: r.meters, next: r.nextPageToken };
      });
      printList(ctx, "meters", MeterSchema, page, [
        { header: "ID", value: (m) => m.id },
        { header: "PRODUCT", value: (m) => m.productId },
        { header: "METRIC", value: (m) => m.metric },
        { header: "AGGREGATION", value: (m) => enumText(AggregationSchema, m.aggregation) },
        { header: "PERIOD", value: (m) => enumText(LimitPeriodSchema, m.period) || "month" },
        { header: "DESCRIPTION", value: (m) => m.description },
      ]);
    }),
  );
  meter
    .command("show")
    .description("show a meter")
    .argument("<id>", "meter id (mtr_…)")
    .action(
      act(async (ctx, _o, [id]) => {
        showMeter(ctx, (await ctx.client(UsageService).getMeter({ tenantId: ctx.tenant, id })).meter);
      }),
    );
  mutationOptions(
    meter
      .command("update")
      .description("change a meter's period, description or agent tokens (only the fields given change)")
      .argument("<id>", "meter id (mtr_…)")
      .option("--period <period>", "month, day or license-term", enumParser(LimitPeriodSchema))
      .option("--description <text>", "what it measures")
      .option("--agent-tokens <bool>", "true or false", (v: string) => {
        if (v !== "true" && v !== "false") throw new UsageError("--agent-tokens: true or false");
        return v === "true";
      }),
  ).action(
    act<{ period?: number; description?: string; agentTokens?: boolean; idempotencyKey?: string }>(
      async (ctx, o, [id]) => {
        const mask = updateMask(o, { period: "period", description: "description", agentTokens: "agent_tokens" });
        if (mask.paths.length === 0)
          throw new UsageError("nothing to change: give --period, --description or --agent-tokens");
        const res = await ctx.client(UsageService).updateMeter({
          tenantId: ctx.tenant,
          id,
          period: o.period,
          description: o.description ?? "",
          agentTokens: o.agentTokens ?? false,
          updateMask: mask,
          idempotencyKey: idempotencyKey(o),
        });
        showMeter(ctx, res.meter);
      },
    ),
  );
  mutationOptions(meter.command("delete").description("delete a meter").argument("<id>", "meter id (mtr_…)")).action(
    act<{ idempotencyKey?: string }>(async (ctx, o, [id]) => {
      const res = await ctx
        .client(UsageService)
        .deleteMeter({ tenantId: ctx.tenant, id, idempotencyKey: idempotencyKey(o) });
      showMeter(ctx, res.meter);
    }),
  );

  const usage = program.command("usage").description("usage events: send them, and see what they add up to");
  usageSendCommand(usage);
  usage
    .command("summary")
    .description("a metric's usage per bucket (hour, day or month) and its total")
    .option("--license <id>", "one license (lic_…)")
    .option("--customer <id>", "every license of a customer (cus_…)")
    .requiredOption("--metric <name>", "the metric")
    .option("--from <time>", "start: an ISO time or -30d (default -30d)", parseTime)
    .option("--to <time>", "end, exclusive (default now)", parseTime)
    .option("--bucket <size>", "hour, day (default) or month", enumParser(BucketSchema))
    .option("--by-agent", "one row per agent")
    .action(
      act<{
        license?: string;
        customer?: string;
        metric: string;
        from?: Timestamp;
        to?: Timestamp;
        bucket?: number;
        byAgent?: boolean;
      }>(async (ctx, o) => {
        if (!o.license === !o.customer) throw new UsageError("give --license or --customer (one of them)");
        const res = await ctx.client(UsageService).getUsageSummary({
          tenantId: ctx.tenant,
          licenseId: o.license ?? "",
          customerId: o.customer ?? "",
          metric: o.metric,
          startTime: o.from ?? parseTime("-30d"),
          endTime: o.to ?? parseTime("now"),
          bucket: o.bucket,
          groupByAgent: o.byAgent === true,
        });
        if (ctx.json) return printJson(messageJson(GetUsageSummaryResponseSchema, res));
        printTable(
          ctx,
          [
            { header: "START", value: (b) => time(b.startTime) },
            ...(o.byAgent ? [{ header: "AGENT", value: (b: (typeof res.buckets)[0]) => b.agentId }] : []),
            { header: "VALUE", value: (b) => String(b.value) },
            { header: "EVENTS", value: (b) => String(b.events) },
          ],
          res.buckets,
        );
        process.stdout.write(`total (${enumText(AggregationSchema, res.aggregation)}): ${res.total}\n`);
      }),
    );
  listOptions(
    usage
      .command("events")
      .description("list a license's stored usage events")
      .requiredOption("--license <id>", "license id (lic_…)")
      .option("--metric <name>", "only this metric"),
  ).action(
    act<ListOptions & { license: string; metric?: string }>(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx.client(UsageService).listUsageEvents({
          tenantId: ctx.tenant,
          licenseId: o.license,
          metric: o.metric ?? "",
          pageSize,
          pageToken,
        });
        return { items: r.events, next: r.nextPageToken };
      });
      printList(ctx, "events", StoredUsageEventSchema, page, [
        { header: "TIME", value: (e) => time(e.time) },
        { header: "LICENSE", value: (e) => e.licenseId },
        { header: "METRIC", value: (e) => e.metric },
        { header: "QUANTITY", value: (e) => String(e.quantity) },
        { header: "AGENT", value: (e) => e.agentId },
        { header: "IDEMPOTENCY KEY", value: (e) => e.idempotencyKey },
      ]);
    }),
  );
  usage
    .command("quota")
    .description("where a license stands against its limits this period")
    .requiredOption("--license <id>", "license id (lic_…)")
    .option("--metric <name>", "only this metric")
    .action(
      act<{ license: string; metric?: string }>(async (ctx, o) => {
        const res = await ctx
          .client(UsageService)
          .getQuota({ tenantId: ctx.tenant, licenseId: o.license, metric: o.metric ?? "" });
        if (ctx.json) return printJson(messageJson(GetQuotaResponseSchema, res));
        printTable(ctx, limitColumns, res.limits);
      }),
    );

  const anomaly = program.command("anomaly").description("usage anomalies: days far from a license's baseline");
  const anomalyColumns = [
    { header: "ID", value: (a: Anomaly) => a.id },
    { header: "LICENSE", value: (a: Anomaly) => a.licenseId },
    { header: "METRIC", value: (a: Anomaly) => a.metric },
    { header: "DAY", value: (a: Anomaly) => time(a.day).slice(0, 10) },
    { header: "VALUE", value: (a: Anomaly) => String(a.value) },
    { header: "Z", value: (a: Anomaly) => a.zScore.toFixed(2) },
    { header: "SEVERITY", value: (a: Anomaly) => enumText(SeveritySchema, a.severity), status: true },
    { header: "STATE", value: (a: Anomaly) => (a.resolved ? "resolved" : "unresolved"), status: true },
  ];
  listOptions(
    anomaly
      .command("list")
      .description("list anomalies")
      .option("--license <id>", "only this license's (lic_…)")
      .option("--severity <level>", "this severity and above: medium, high or critical", enumParser(SeveritySchema))
      .option("--unresolved", "only unresolved ones")
      .option("--resolved", "only resolved ones"),
  ).action(
    act<ListOptions & { license?: string; severity?: number; unresolved?: boolean; resolved?: boolean }>(
      async (ctx, o) => {
        if (o.resolved && o.unresolved) throw new UsageError("give --resolved or --unresolved, not both");
        const resolution = enumParser(ResolutionFilterSchema)(
          o.resolved ? "resolved" : o.unresolved ? "unresolved" : "resolved",
        );
        const page = await collectPages(o, async (pageSize, pageToken) => {
          const r = await ctx.client(UsageService).listAnomalies({
            tenantId: ctx.tenant,
            licenseId: o.license ?? "",
            minSeverity: o.severity,
            resolution: o.resolved || o.unresolved ? resolution : 0,
            pageSize,
            pageToken,
          });
          return { items: r.anomalies, next: r.nextPageToken };
        });
        printList(ctx, "anomalies", AnomalySchema, page, anomalyColumns);
      },
    ),
  );
  mutationOptions(
    anomaly
      .command("resolve")
      .description("mark an anomaly resolved, with a note")
      .argument("<id>", "anomaly id (anm_…)")
      .option("--note <text>", "why it is resolved", ""),
  ).action(
    act<{ note: string; idempotencyKey?: string }>(async (ctx, o, [id]) => {
      const res = await ctx
        .client(UsageService)
        .resolveAnomaly({ tenantId: ctx.tenant, id, note: o.note, idempotencyKey: idempotencyKey(o) });
      if (ctx.json) return printJson({ anomaly: messageJson(AnomalySchema, res.anomaly!) });
      printRecord(ctx, fieldsOf(AnomalySchema, res.anomaly!));
    }),
  );
  anomaly
    .command("detect")
    .description("run anomaly detection for a day now (the server also runs it daily)")
    .option("--day <time>", "the UTC day (default yesterday)", parseTime)
    .action(
      act<{ day?: Timestamp }>(async (ctx, o) => {
        const res = await ctx
          .client(UsageService)
          .detectAnomalies({ tenantId: ctx.tenant, day: o.day ?? parseTime("-1d") });
        if (ctx.json) return printJson({ anomalies: res.anomalies.map((a) => messageJson(AnomalySchema, a)) });
        printTable(ctx, anomalyColumns, res.anomalies);
      }),
    );
}

export { limitColumns };
