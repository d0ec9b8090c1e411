/* `licensd webhook …` (WebhookService): endpoints, their secrets, and deliveries with their attempts. */
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { type Duration, durationMs } from "@bufbuild/protobuf/wkt";
import { WebhookService } from "@licensd/client";
import {
  type WebhookAttempt,
  type WebhookDelivery,
  WebhookDeliverySchema,
  WebhookDeliveryStatusSchema,
  type WebhookEndpoint,
  WebhookEndpointDisabledReasonSchema,
  WebhookEndpointSchema,
} from "@licensd/client/gen/licensd/webhook/v1/webhook_pb.js";
import {
  CreateWebhookEndpointResponseSchema,
  DeleteWebhookEndpointResponseSchema,
  GetWebhookDeliveryResponseSchema,
  GetWebhookEndpointResponseSchema,
  RedeliverWebhookResponseSchema,
  RotateWebhookSecretResponseSchema,
  SendTestWebhookResponseSchema,
  UpdateWebhookEndpointResponseSchema,
} from "@licensd/client/gen/licensd/webhook/v1/webhook_service_pb.js";
import { type Command, Option } from "commander";
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
import { fieldsOf, messageJson, note, printJson, printRecord, printTable } from "./output.js";
import { collect, enumParser, parseDuration } from "./parse.js";
import { type Context, EXIT, UsageError } from "./runtime.js";

/** An endpoint's fields; `enabled: false` is kept (protobuf JSON would leave the default out). */
function endpointRows(endpoint: WebhookEndpoint): [string, string][] {
  const rows = fieldsOf(WebhookEndpointSchema, endpoint);
  if (!endpoint.enabled) {
    // In the schema's order: before the first field that comes after `enabled`.
    const fields = WebhookEndpointSchema.fields;
    const after = new Set(fields.slice(fields.indexOf(WebhookEndpointSchema.field.enabled) + 1).map((f) => f.name));
    const at = rows.findIndex(([k]) => after.has(k));
    rows.splice(at < 0 ? rows.length : at, 0, ["enabled", "false"]);
  }
  return rows;
}

/** A response carrying `endpoint` (and a secret for create and rotate-secret): the whole response with --json. */
function showEndpoint<D extends DescMessage>(
  ctx: Context,
  schema: D,
  response: MessageShape<D> & { endpoint?: WebhookEndpoint },
  extra: [string, string][] = [],
): void {
  if (ctx.json) printJson(messageJson(schema, response));
  else printRecord(ctx, [...(response.endpoint ? endpointRows(response.endpoint) : []), ...extra]);
}

const latencyMs = (d: Duration | undefined) => (d ? String(Math.round(durationMs(d))) : "");
const lastAttempt = (d: WebhookDelivery): WebhookAttempt | undefined => d.attempts[d.attempts.length - 1];
const succeeded = (a: WebhookAttempt | undefined) => a !== undefined && a.httpStatus >= 200 && a.httpStatus < 300;

/**
 * One delivery: with --json the whole response; else its fields (`field: value`), a blank line,
 * then its attempts as a table (tab-separated when piped).
 */
function showDelivery<D extends DescMessage>(
  ctx: Context,
  schema: D,
  response: MessageShape<D> & { delivery?: WebhookDelivery },
): void {
  const delivery = response.delivery;
  if (ctx.json) printJson(messageJson(schema, response));
  if (ctx.json || !delivery) return;
  printRecord(ctx, fieldsOf(WebhookDeliverySchema, { ...delivery, attempts: [] }));
  process.stdout.write("\n");
  printTable(
    ctx,
    [
      { header: "#", value: (a) => String(a.number) },
      { header: "TIME", value: (a) => time(a.startTime) },
      { header: "HTTP", value: (a) => (a.httpStatus ? String(a.httpStatus) : "") },
      { header: "LATENCY MS", value: (a) => latencyMs(a.latency) },
      { header: "ERROR REASON", value: (a) => a.errorReason },
      { header: "ERROR", value: (a) => a.error },
      { header: "MANUAL", value: (a) => (a.manual ? "yes" : "") },
    ],
    delivery.attempts,
  );
}

/** Redeliver and test: the delivery with its new attempt; "no" (exit 4) unless that attempt got a 2xx. */
function attemptOutcome(ctx: Context, delivery: WebhookDelivery | undefined): number {
  const attempt = delivery && lastAttempt(delivery);
  if (succeeded(attempt)) return EXIT.ok;
  const why = attempt?.httpStatus
    ? `HTTP ${attempt.httpStatus}`
    : attempt?.error || attempt?.errorReason || "no attempt";
  note(ctx, `the attempt did not succeed: ${why}`);
  return EXIT.negative;
}

const ENDPOINT_URL_MISSING =
  "give the endpoint's URL with --endpoint-url (--url names the licensd server, as for every command)";

interface EndpointFlags {
  endpointUrl?: string;
  description?: string;
  eventType?: string[];
  idempotencyKey?: string;
}

export function webhookCommands(program: Command): void {
  const webhook = program
    .command("webhook")
    .description("webhook endpoints: signed POSTs of the tenant's events (docs/webhooks.md), and their deliveries");
  mutationOptions(
    webhook
      .command("create")
      .description("create an endpoint; its signing secret (whsec_…) is printed once and never again")
      // Not --url: that is the global option naming the server, taken wherever it is on the line.
      .option("--endpoint-url <url>", "where deliveries are POSTed: https://… (http://… only in development)")
      .option("--description <text>", "free text")
      .option("--event-type <type>", "an event type, `prefix.*` or `*` (repeatable; default all)", collect)
      .option("--disabled", "create it disabled: nothing is sent until `webhook update --enable`"),
  ).action(
    act<EndpointFlags & { disabled?: boolean }>(async (ctx, o) => {
      if (o.endpointUrl === undefined) throw new UsageError(ENDPOINT_URL_MISSING);
      const res = await ctx.client(WebhookService).createWebhookEndpoint({
        tenantId: ctx.tenant,
        url: o.endpointUrl,
        description: o.description ?? "",
        eventTypes: o.eventType ?? [],
        enabled: o.disabled ? false : undefined,
        idempotencyKey: idempotencyKey(o),
      });
      showEndpoint(ctx, CreateWebhookEndpointResponseSchema, res, [["secret", res.secret]]);
      note(ctx, "keep the secret now: it cannot be shown again (the receiver's verifyWebhook needs it)");
    }),
  );
  listOptions(webhook.command("list").description("list the tenant's endpoints, oldest first")).action(
    act<ListOptions>(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx.client(WebhookService).listWebhookEndpoints({ tenantId: ctx.tenant, pageSize, pageToken });
        return { items: r.endpoints, next: r.nextPageToken };
      });
      printList(ctx, "endpoints", WebhookEndpointSchema, page, [
        { header: "ID", value: (e) => e.id },
        { header: "URL", value: (e) => e.url },
        { header: "EVENT TYPES", value: (e) => (e.eventTypes.length > 0 ? e.eventTypes.join(",") : "*") },
        { header: "STATUS", value: (e) => (e.enabled ? "enabled" : "disabled"), status: true },
        { header: "DISABLED REASON", value: (e) => enumText(WebhookEndpointDisabledReasonSchema, e.disabledReason) },
        { header: "DESCRIPTION", value: (e) => e.description },
      ]);
    }),
  );
  webhook
    .command("show")
    .alias("get")
    .description("show an endpoint (never its secret)")
    .argument("<id>", "endpoint id (whe_…)")
    .action(
      act(async (ctx, _o, [id]) => {
        const res = await ctx.client(WebhookService).getWebhookEndpoint({ tenantId: ctx.tenant, id });
        showEndpoint(ctx, GetWebhookEndpointResponseSchema, res);
      }),
    );
  mutationOptions(
    webhook
      .command("update")
      .description("change an endpoint (only the fields given change); enabling clears its failure state")
      .argument("<id>", "endpoint id (whe_…)")
      .option("--endpoint-url <url>", "the new URL deliveries are POSTed to")
      .option("--description <text>", "the new description")
      .option("--event-type <type>", "event types, replacing the list (repeatable; `*` for all)", collect)
      .addOption(new Option("--enable", "send deliveries again (pending ones resume)").conflicts("disable"))
      .addOption(new Option("--disable", "stop sending; pending deliveries wait")),
  ).action(
    act<EndpointFlags & { enable?: boolean; disable?: boolean }>(async (ctx, o, [id]) => {
      const enabled = o.enable ? true : o.disable ? false : undefined;
      const mask = updateMask(
        { ...o, enabled },
        { endpointUrl: "url", description: "description", eventType: "event_types", enabled: "enabled" },
      );
      if (mask.paths.length === 0)
        throw new UsageError(
          "nothing to change: give --endpoint-url, --description, --event-type, --enable or --disable",
        );
      const res = await ctx.client(WebhookService).updateWebhookEndpoint({
        tenantId: ctx.tenant,
        id,
        url: o.endpointUrl ?? "",
        description: o.description ?? "",
        eventTypes: o.eventType ?? [],
        enabled: enabled ?? false,
        updateMask: mask,
        idempotencyKey: idempotencyKey(o),
      });
      showEndpoint(ctx, UpdateWebhookEndpointResponseSchema, res);
    }),
  );
  mutationOptions(
    webhook
      .command("delete")
      .description("delete an endpoint and its delivery history; nothing more is sent to it")
      .argument("<id>", "endpoint id (whe_…)"),
  ).action(
    act<{ idempotencyKey?: string }>(async (ctx, o, [id]) => {
      const res = await ctx
        .client(WebhookService)
        .deleteWebhookEndpoint({ tenantId: ctx.tenant, id, idempotencyKey: idempotencyKey(o) });
      showEndpoint(ctx, DeleteWebhookEndpointResponseSchema, res);
    }),
  );
  mutationOptions(
    webhook
      .command("rotate-secret")
      .description("give an endpoint a new signing secret, printed once; the old one keeps signing too for --overlap")
      .argument("<id>", "endpoint id (whe_…)")
      .option(
        "--overlap <d>",
        "how long the old secret still signs: 24h, 30m, 0 for not at all (default 24h)",
        parseDuration,
      ),
  ).action(
    act<{ overlap?: Duration; idempotencyKey?: string }>(async (ctx, o, [id]) => {
      const res = await ctx.client(WebhookService).rotateWebhookSecret({
        tenantId: ctx.tenant,
        id,
        overlap: o.overlap,
        idempotencyKey: idempotencyKey(o),
      });
      showEndpoint(ctx, RotateWebhookSecretResponseSchema, res, [["secret", res.secret]]);
      note(ctx, "keep the secret now: it cannot be shown again (the receiver's verifyWebhook needs it)");
      const until = time(res.endpoint?.previousSecretExpireTime);
      if (until) note(ctx, `the old secret also signs deliveries until ${until}`);
    }),
  );
  listOptions(
    webhook
      .command("deliveries")
      .description("list deliveries, newest first")
      .option("--endpoint <id>", "only this endpoint's (whe_…)")
      .option("--event <id>", "only this event's (evt_…)")
      .option("--status <status>", "pending, succeeded or failed", enumParser(WebhookDeliveryStatusSchema)),
  ).action(
    act<ListOptions & { endpoint?: string; event?: string; status?: number }>(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx.client(WebhookService).listWebhookDeliveries({
          tenantId: ctx.tenant,
          endpointId: o.endpoint ?? "",
          eventId: o.event ?? "",
          status: o.status,
          pageSize,
          pageToken,
        });
        return { items: r.deliveries, next: r.nextPageToken };
      });
      printList(ctx, "deliveries", WebhookDeliverySchema, page, [
        { header: "ID", value: (d) => d.id },
        { header: "ENDPOINT", value: (d) => d.endpointId },
        { header: "EVENT TYPE", value: (d) => d.eventType },
        { header: "STATUS", value: (d) => enumText(WebhookDeliveryStatusSchema, d.status), status: true },
        { header: "ATTEMPTS", value: (d) => String(d.attemptCount) },
        { header: "LAST HTTP", value: (d) => String(lastAttempt(d)?.httpStatus || "") },
        { header: "NEXT ATTEMPT", value: (d) => time(d.nextAttemptTime) },
      ]);
    }),
  );
  webhook
    .command("delivery")
    .description("show one delivery: its event, status and payload, and every attempt")
    .argument("<id>", "delivery id (whd_…)")
    .action(
      act(async (ctx, _o, [id]) => {
        const res = await ctx.client(WebhookService).getWebhookDelivery({ tenantId: ctx.tenant, id });
        showDelivery(ctx, GetWebhookDeliveryResponseSchema, res);
      }),
    );
  mutationOptions(
    webhook
      .command("redeliver")
      .description("send a delivery again now (same webhook-id and body); exit 4 unless the endpoint answers 2xx")
      .argument("<id>", "delivery id (whd_…)"),
  ).action(
    act<{ idempotencyKey?: string }>(async (ctx, o, [id]) => {
      const res = await ctx
        .client(WebhookService)
        .redeliverWebhook({ tenantId: ctx.tenant, id, idempotencyKey: idempotencyKey(o) });
      showDelivery(ctx, RedeliverWebhookResponseSchema, res);
      return attemptOutcome(ctx, res.delivery);
    }),
  );
  mutationOptions(
    webhook
      .command("test")
      .description("send a webhook.test event to an endpoint now (never retried); exit 4 unless it answers 2xx")
      .argument("<id>", "endpoint id (whe_…)"),
  ).action(
    act<{ idempotencyKey?: string }>(async (ctx, o, [id]) => {
      const res = await ctx
        .client(WebhookService)
        .sendTestWebhook({ tenantId: ctx.tenant, endpointId: id, idempotencyKey: idempotencyKey(o) });
      showDelivery(ctx, SendTestWebhookResponseSchema, res);
      return attemptOutcome(ctx, res.delivery);
    }),
  );
}
