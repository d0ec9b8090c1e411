/*
 * `licensd payment …` (WebhookService's payment RPCs): sources that turn a payment provider's webhook events into
 * licenses (docs/provisioning.md), the events they recorded, the license-key e-mails and their template. A provider's
 * signing secret is read from a file or stdin, never taken on the command line, where shell history and `ps` would
 * keep it.
 */
import { readFileSync } from "node:fs";
import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { Duration } from "@bufbuild/protobuf/wkt";
import { WebhookService } from "@licensd/client";
import {
  EmailDeliverySchema,
  EmailDeliveryStatusSchema,
  type EmailTemplate,
  type PaymentEvent,
  PaymentEventSchema,
  PaymentEventStatus,
  PaymentEventStatusSchema,
  type PaymentMapping,
  type PaymentMappingSchema,
  PaymentProviderSchema,
  type PaymentSource,
  PaymentSourceSchema,
} from "@licensd/client/gen/licensd/webhook/v1/payment_source_pb.js";
import {
  CreatePaymentSourceResponseSchema,
  DeletePaymentSourceResponseSchema,
  GetEmailTemplateResponseSchema,
  GetPaymentSourceResponseSchema,
  ReplayPaymentEventResponseSchema,
  RotatePaymentSourceSecretResponseSchema,
  UpdateEmailTemplateResponseSchema,
  UpdatePaymentSourceResponseSchema,
} from "@licensd/client/gen/licensd/webhook/v1/webhook_service_pb.js";
import { type Command, InvalidArgumentError, Option } from "commander";
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
import { fieldsOf, messageJson, note, printJson, printRecord } from "./output.js";
import { enumParser, parseDuration } from "./parse.js";
import { type Context, EXIT, UsageError } from "./runtime.js";

type MappingInit = MessageInitShape<typeof PaymentMappingSchema>;

const ITEM = /^[A-Za-z0-9_.:-]{1,255}$/;
const POLICY_ID = /^pol_[0-9a-z]{26}$/;
const META_KEY = /^[A-Za-z0-9._/-]{1,63}$/;
const MAP_FORM = "ITEM=POLICY_ID[+file][,KEY=VALUE…], e.g. price_1Nx=pol_…+file,tier=pro";
/** After the policy id: the key e-mail also carries a signed license file (`attach_license_file`). */
const FILE_SUFFIX = "+file";

/**
 * Collects repeated `--map ITEM=POLICY_ID[+file][,KEY=VALUE…]`: the provider's price or product id, the policy its
 * purchase gets (`+file`: with a license file attached to the key e-mail), and labels for the license's metadata.
 * Checked here with the API's rules, so the message names the flag.
 */
export function collectMapping(value: string, previous: MappingInit[] = []): MappingInit[] {
  const eq = value.indexOf("=");
  if (eq < 1) throw new InvalidArgumentError(MAP_FORM);
  const item = value.slice(0, eq);
  const [policy, ...pairs] = value.slice(eq + 1).split(",");
  const attachLicenseFile = policy.endsWith(FILE_SUFFIX);
  const policyId = attachLicenseFile ? policy.slice(0, -FILE_SUFFIX.length) : policy;
  if (!ITEM.test(item)) throw new InvalidArgumentError(`the item: 1 to 255 of A-Z a-z 0-9 _ . : - (${MAP_FORM})`);
  if (!POLICY_ID.test(policyId)) throw new InvalidArgumentError(`the policy: an id pol_… (${MAP_FORM})`);
  if (previous.some((m) => m.item === item)) throw new InvalidArgumentError(`${item} is mapped twice`);
  const metadata: Record<string, string> = {};
  for (const pair of pairs) {
    const i = pair.indexOf("=");
    const key = pair.slice(0, i);
    if (i < 1 || !META_KEY.test(key))
      throw new InvalidArgumentError(`a label KEY=VALUE, the key 1 to 63 of A-Z a-z 0-9 . _ / - (${MAP_FORM})`);
    metadata[key] = pair.slice(i + 1);
  }
  return [...previous, { item, policyId, metadata, attachLicenseFile }];
}

/** A mapping as `--map` takes it, its labels sorted by key (a map's order is not kept on the wire). */
const mappingText = (m: PaymentMapping) =>
  [
    `${m.item}=${m.policyId}${m.attachLicenseFile ? FILE_SUFFIX : ""}`,
    ...Object.entries(m.metadata)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => `${k}=${v}`),
  ].join(",");

interface SecretFlags {
  idempotencyKey?: string;
  secretFile?: string;
  secretStdin?: boolean;
  secret?: string;
}

const SECRET_MISSING =
  "give the provider's signing secret with --secret-file <path> or --secret-stdin " +
  "(never on the command line: shell history and ps would keep it)";

/** Adds --secret-file and --secret-stdin, and a hidden --secret that only says why it is refused. */
function secretOptions(cmd: Command, what: string): Command {
  return cmd
    .addOption(new Option("--secret-file <path>", `read ${what} from this file (surrounding whitespace dropped)`))
    .addOption(new Option("--secret-stdin", `read ${what} from stdin`).conflicts("secretFile"))
    .addOption(new Option("--secret <value>").hideHelp());
}

async function readSecret(o: SecretFlags): Promise<string> {
  if (o.secret !== undefined) throw new UsageError(`--secret is not taken: ${SECRET_MISSING}`);
  let text: string;
  let from: string;
  if (o.secretFile !== undefined) {
    from = "--secret-file";
    try {
      text = readFileSync(o.secretFile, "utf8");
    } catch (err) {
      throw new UsageError(`--secret-file: cannot read ${o.secretFile}: ${(err as Error).message}`);
    }
  } else if (o.secretStdin) {
    from = "--secret-stdin";
    if (process.stdin.isTTY) process.stderr.write("the provider's signing secret, then Enter and Ctrl-D: ");
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    text = Buffer.concat(chunks).toString("utf8");
  } else throw new UsageError(SECRET_MISSING);
  const secret = text.trim();
  if (secret === "") throw new UsageError(`${from}: the secret is empty`);
  // The API's rule, checked here so a wrong file is named and its content never echoed back.
  if (!/^[\x21-\x7e]{8,256}$/.test(secret))
    throw new UsageError(`${from}: not a signing secret (one line of 8 to 256 printable ASCII characters)`);
  return secret;
}

/**
 * A source's fields in the schema's order: each mapping on a `mapping:` row as `--map` takes it, and
 * `enabled: false` kept (protobuf JSON leaves the default out).
 */
function sourceRows(source: PaymentSource): [string, string][] {
  const rows = fieldsOf(PaymentSourceSchema, { ...source, mappings: [] });
  const fields = PaymentSourceSchema.fields;
  const after = new Set(fields.slice(fields.indexOf(PaymentSourceSchema.field.mappings) + 1).map((f) => f.name));
  const at = rows.findIndex(([k]) => after.has(k));
  const extra: [string, string][] = source.mappings.map((m) => ["mapping", mappingText(m)]);
  if (!source.enabled) extra.push(["enabled", "false"]);
  rows.splice(at < 0 ? rows.length : at, 0, ...extra);
  return rows;
}

/** A response carrying `source`: the whole response with --json, else the source's fields. */
function showSource<D extends DescMessage>(
  ctx: Context,
  schema: D,
  response: MessageShape<D> & { source?: PaymentSource },
): void {
  if (ctx.json) printJson(messageJson(schema, response));
  else if (response.source) printRecord(ctx, sourceRows(response.source));
}

const providerName = (s: PaymentSource) => enumText(PaymentProviderSchema, s.provider);
const PROVIDER_TITLE: Record<string, string> = { stripe: "Stripe", polar: "Polar" };

export function paymentCommands(program: Command): void {
  const payment = program
    .command("payment")
    .description("provisioning from payments: provider webhooks that create licenses (docs/provisioning.md)");
  const source = payment
    .command("source")
    .description("payment sources: a provider's webhook endpoint on licensd, with its price → policy mappings");

  mutationOptions(
    secretOptions(
      source
        .command("create")
        .description("connect a provider: prints the hook path to give it as its webhook URL (after licensd's URL)")
        .addOption(
          new Option("--provider <provider>", "stripe or polar")
            .argParser(enumParser(PaymentProviderSchema))
            .makeOptionMandatory(),
        )
        .option("--description <text>", "free text")
        .option("--map <mapping>", `what a purchase gets: ${MAP_FORM} (repeatable)`, collectMapping)
        .option("--disabled", "create it disabled: its hook path answers 404 until `payment source update --enable`"),
      "the signing secret the provider shows for the endpoint",
    ),
  ).action(
    act<SecretFlags & { provider: number; description?: string; map?: MappingInit[]; disabled?: boolean }>(
      async (ctx, o) => {
        const res = await ctx.client(WebhookService).createPaymentSource({
          tenantId: ctx.tenant,
          provider: o.provider,
          secret: await readSecret(o),
          description: o.description ?? "",
          mappings: o.map ?? [],
          enabled: o.disabled ? false : undefined,
          idempotencyKey: idempotencyKey(o),
        });
        showSource(ctx, CreatePaymentSourceResponseSchema, res);
        const created = res.source;
        if (!created) return;
        const provider = PROVIDER_TITLE[providerName(created)] ?? providerName(created);
        note(ctx, `hook path: ${created.hookPath}`);
        note(
          ctx,
          `give ${provider} this webhook endpoint URL: <licensd public URL>${created.hookPath}, the address at ` +
            `which ${provider} reaches licensd (e.g. ${ctx.url}${created.hookPath} if that one is public)`,
        );
      },
    ),
  );
  listOptions(source.command("list").description("list the tenant's payment sources, oldest first")).action(
    act<ListOptions>(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx.client(WebhookService).listPaymentSources({ tenantId: ctx.tenant, pageSize, pageToken });
        return { items: r.sources, next: r.nextPageToken };
      });
      printList(ctx, "sources", PaymentSourceSchema, page, [
        { header: "ID", value: (s) => s.id },
        { header: "PROVIDER", value: providerName },
        { header: "HOOK PATH", value: (s) => s.hookPath },
        { header: "MAPPINGS", value: (s) => String(s.mappings.length) },
        { header: "STATUS", value: (s) => (s.enabled ? "enabled" : "disabled"), status: true },
        { header: "DESCRIPTION", value: (s) => s.description },
      ]);
    }),
  );
  source
    .command("show")
    .alias("get")
    .description("show a payment source (never its secret)")
    .argument("<id>", "source id (psrc_…)")
    .action(
      act(async (ctx, _o, [id]) => {
        const res = await ctx.client(WebhookService).getPaymentSource({ tenantId: ctx.tenant, id });
        showSource(ctx, GetPaymentSourceResponseSchema, res);
      }),
    );
  mutationOptions(
    source
      .command("update")
      .description("change a payment source (only the fields given change)")
      .argument("<id>", "source id (psrc_…)")
      .option("--description <text>", "the new description")
      .option("--map <mapping>", `a mapping, ${MAP_FORM}; the ones given replace all (repeatable)`, collectMapping)
      .addOption(new Option("--clear-mappings", "remove every mapping").conflicts("map"))
      .addOption(new Option("--enable", "accept events again").conflicts("disable"))
      .addOption(new Option("--disable", "answer 404 to the provider, which retries (Stripe for 3 days)")),
  ).action(
    act<{
      description?: string;
      map?: MappingInit[];
      clearMappings?: boolean;
      enable?: boolean;
      disable?: boolean;
      idempotencyKey?: string;
    }>(async (ctx, o, [id]) => {
      const enabled = o.enable ? true : o.disable ? false : undefined;
      const mappings = o.clearMappings ? [] : o.map;
      const mask = updateMask(
        { description: o.description, mappings, enabled },
        { description: "description", mappings: "mappings", enabled: "enabled" },
      );
      if (mask.paths.length === 0)
        throw new UsageError("nothing to change: give --description, --map, --clear-mappings, --enable or --disable");
      const res = await ctx.client(WebhookService).updatePaymentSource({
        tenantId: ctx.tenant,
        id,
        description: o.description ?? "",
        mappings: mappings ?? [],
        enabled: enabled ?? false,
        updateMask: mask,
        idempotencyKey: idempotencyKey(o),
      });
      showSource(ctx, UpdatePaymentSourceResponseSchema, res);
    }),
  );
  mutationOptions(
    secretOptions(
      source
        .command("rotate-secret")
        .description("replace the signing secret with the provider's new one; the old one is accepted for --overlap")
        .argument("<id>", "source id (psrc_…)")
        .option(
          "--overlap <d>",
          "how long the old secret is still accepted: 24h, 30m, 0 for not at all (default 24h, at most 7d)",
          parseDuration,
        ),
      "the provider's new signing secret",
    ),
  ).action(
    act<SecretFlags & { overlap?: Duration }>(async (ctx, o, [id]) => {
      const res = await ctx.client(WebhookService).rotatePaymentSourceSecret({
        tenantId: ctx.tenant,
        id,
        secret: await readSecret(o),
        overlap: o.overlap,
        idempotencyKey: idempotencyKey(o),
      });
      showSource(ctx, RotatePaymentSourceSecretResponseSchema, res);
      const until = time(res.source?.previousSecretExpireTime);
      if (until) note(ctx, `the old secret is also accepted until ${until}`);
    }),
  );
  mutationOptions(
    source
      .command("delete")
      .description("delete a payment source and its recorded events; the licenses it created stay")
      .argument("<id>", "source id (psrc_…)"),
  ).action(
    act<{ idempotencyKey?: string }>(async (ctx, o, [id]) => {
      const res = await ctx
        .client(WebhookService)
        .deletePaymentSource({ tenantId: ctx.tenant, id, idempotencyKey: idempotencyKey(o) });
      showSource(ctx, DeletePaymentSourceResponseSchema, res);
    }),
  );

  const event = payment.command("event").description("payment events: what each verified provider event became");
  listOptions(
    event
      .command("list")
      .description("list recorded payment events, newest first")
      .option("--source <id>", "only this source's (psrc_…)")
      .option("--status <status>", "applied, ignored or failed", enumParser(PaymentEventStatusSchema)),
  ).action(
    act<ListOptions & { source?: string; status?: number }>(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx.client(WebhookService).listPaymentEvents({
          tenantId: ctx.tenant,
          sourceId: o.source ?? "",
          status: o.status,
          pageSize,
          pageToken,
        });
        return { items: r.events, next: r.nextPageToken };
      });
      printList(ctx, "events", PaymentEventSchema, page, [
        { header: "ID", value: (e) => e.id },
        { header: "SOURCE", value: (e) => e.sourceId },
        { header: "TYPE", value: (e) => e.type },
        { header: "ACTION", value: (e) => e.action },
        { header: "STATUS", value: (e) => enumText(PaymentEventStatusSchema, e.status), status: true },
        { header: "LICENSES", value: (e) => e.licenseIds.join(",") },
        { header: "RECEIVED", value: (e) => time(e.receiveTime) },
        { header: "REASON", value: (e) => e.reason },
      ]);
    }),
  );
  mutationOptions(
    event
      .command("replay")
      .description("apply a FAILED event again with the source's mappings as they are now; exit 4 if it fails again")
      .argument("<id>", "event id (pev_…)"),
  ).action(
    act<{ idempotencyKey?: string }>(async (ctx, o, [id]) => {
      const res = await ctx
        .client(WebhookService)
        .replayPaymentEvent({ tenantId: ctx.tenant, id, idempotencyKey: idempotencyKey(o) });
      if (ctx.json) printJson(messageJson(ReplayPaymentEventResponseSchema, res));
      else if (res.event) printRecord(ctx, fieldsOf(PaymentEventSchema, res.event));
      return replayOutcome(ctx, res.event);
    }),
  );

  const email = payment.command("email").description("license-key e-mails to buyers: where each one stands");
  listOptions(
    email
      .command("list")
      .description("list the license-key e-mails, newest first")
      .option("--license <id>", "only this license's (lic_…)")
      .option("--status <status>", "pending, sent or failed", enumParser(EmailDeliveryStatusSchema)),
  ).action(
    act<ListOptions & { license?: string; status?: number }>(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx.client(WebhookService).listEmailDeliveries({
          tenantId: ctx.tenant,
          licenseId: o.license ?? "",
          status: o.status,
          pageSize,
          pageToken,
        });
        return { items: r.deliveries, next: r.nextPageToken };
      });
      printList(ctx, "deliveries", EmailDeliverySchema, page, [
        { header: "ID", value: (d) => d.id },
        { header: "LICENSE", value: (d) => d.licenseId },
        { header: "TO", value: (d) => d.toAddress },
        { header: "STATUS", value: (d) => enumText(EmailDeliveryStatusSchema, d.status), status: true },
        { header: "ATTEMPTS", value: (d) => String(d.attempts) },
        { header: "NEXT ATTEMPT", value: (d) => time(d.nextAttemptTime) },
        { header: "SENT", value: (d) => time(d.sendTime) },
        { header: "LAST ERROR", value: (d) => d.lastError },
      ]);
    }),
  );

  const template = payment
    .command("template")
    .description("the tenant's license-key e-mail: a subject, a plain-text and an HTML part with {{placeholders}}");
  template
    .command("show")
    .alias("get")
    .description("show the template in use (licensd's default until one is set)")
    .addOption(
      new Option("--part <part>", "print only this part as it is, e.g. to edit it and `set` it again").choices(
        TEMPLATE_PARTS,
      ),
    )
    .action(
      act<{ part?: (typeof TEMPLATE_PARTS)[number] }>(async (ctx, o) => {
        const res = await ctx.client(WebhookService).getEmailTemplate({ tenantId: ctx.tenant });
        if (ctx.json) printJson(messageJson(GetEmailTemplateResponseSchema, res));
        else if (o.part) process.stdout.write(withNewline(res.template?.[o.part] ?? ""));
        else printTemplate(ctx, res.template, [["default", String(res.default)]]);
      }),
    );
  mutationOptions(
    template
      .command("set")
      .description("replace the template; the parts not given are kept as they are now")
      .option("--subject <text>", "the subject line (1 to 200 characters)")
      .option("--text-file <path>", "the plain-text part from this file, - for stdin; must hold {{license_key}}")
      .option("--html-file <path>", "the HTML part from this file, - for stdin; must hold {{license_key}}"),
  ).action(
    act<{ subject?: string; textFile?: string; htmlFile?: string; idempotencyKey?: string }>(async (ctx, o) => {
      if (o.subject === undefined && o.textFile === undefined && o.htmlFile === undefined)
        throw new UsageError("nothing to change: give --subject, --text-file or --html-file");
      if (o.textFile === "-" && o.htmlFile === "-")
        throw new UsageError("only one of --text-file and --html-file can be - (stdin)");
      const text = o.textFile === undefined ? undefined : await readPart("--text-file", o.textFile);
      const html = o.htmlFile === undefined ? undefined : await readPart("--html-file", o.htmlFile);
      const client = ctx.client(WebhookService);
      // The RPC replaces the whole template: the parts not given are read first.
      const current =
        o.subject !== undefined && text !== undefined && html !== undefined
          ? undefined
          : (await client.getEmailTemplate({ tenantId: ctx.tenant })).template;
      const res = await client.updateEmailTemplate({
        tenantId: ctx.tenant,
        template: {
          subject: o.subject ?? current?.subject ?? "",
          text: text ?? current?.text ?? "",
          html: html ?? current?.html ?? "",
        },
        idempotencyKey: idempotencyKey(o),
      });
      if (ctx.json) printJson(messageJson(UpdateEmailTemplateResponseSchema, res));
      else printTemplate(ctx, res.template);
    }),
  );
}

const TEMPLATE_PARTS = ["subject", "text", "html"] as const;
const withNewline = (s: string) => (s.endsWith("\n") ? s : `${s}\n`);

/** `subject:` and any `extra` rows, then each part under its name, a blank line between them. */
function printTemplate(ctx: Context, t: EmailTemplate | undefined, extra: [string, string][] = []): void {
  if (!t) return;
  printRecord(ctx, [["subject", t.subject], ...extra]);
  for (const part of ["text", "html"] as const) process.stdout.write(`\n${part}:\n${withNewline(t[part])}`);
}

/** A template part from a file, or stdin for `-`, as it is (no trimming: it is the e-mail's body). */
async function readPart(flag: string, file: string): Promise<string> {
  let text: string;
  if (file === "-") {
    if (process.stdin.isTTY) process.stderr.write(`${flag}: the part, then Ctrl-D: `);
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    text = Buffer.concat(chunks).toString("utf8");
  } else
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new UsageError(`${flag}: cannot read ${file}: ${(err as Error).message}`);
    }
  if (text.trim() === "") throw new UsageError(`${flag}: ${file === "-" ? "stdin" : file} is empty`);
  return text;
}

/** Replay: "no" (exit 4) unless the event is now applied. */
function replayOutcome(ctx: Context, e: PaymentEvent | undefined): number {
  if (e?.status === PaymentEventStatus.APPLIED) return EXIT.ok;
  note(ctx, `the event was not applied: ${e?.reason || "no reason given"}`);
  return EXIT.negative;
}
