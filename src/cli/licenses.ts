/* `licensd license …` (LicensingService). */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { LicensingService, verifyValidationResponse } from "@licensd/client";
import {
  type License,
  LicenseSchema,
  LicenseStatusSchema,
} from "@licensd/client/gen/licensd/licensing/v1/license_pb.js";
import {
  CreateLicenseRequestSchema,
  LicenseFileFormatSchema,
  type LicenseUser,
  LicenseUserSchema,
  UpdateLicenseRequestSchema,
  ValidateLicenseResponseSchema,
  ValidationCodeSchema,
} from "@licensd/client/gen/licensd/licensing/v1/licensing_service_pb.js";
import type { Command } from "commander";
import { type EntitlementInit, parseEntitlement } from "./catalog.js";
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
  withBody,
} from "./command.js";
import { fieldsOf, messageJson, note, printJson, printRecord } from "./output.js";
import {
  collect,
  collectComponents,
  collectPairs,
  enumParser,
  parseBody,
  parseCount,
  parseDuration,
  parseTime,
} from "./parse.js";
import { type Context, EXIT, UsageError } from "./runtime.js";
import { signingKeys } from "./activation.js";

function showLicense(ctx: Context, license: License | undefined, extra: Record<string, string> = {}) {
  if (ctx.json) return printJson({ license: license && messageJson(LicenseSchema, license), ...extra });
  printRecord(ctx, [...(license ? fieldsOf(LicenseSchema, license) : []), ...Object.entries(extra)]);
}

export function licenseCommands(program: Command): void {
  const license = program.command("license").description("licenses: issue, inspect and change them");
  mutationOptions(
    license
      .command("create")
      .description("issue a license; its key is printed once (the server keeps a digest)")
      .requiredOption("--policy <id>", "policy id (pol_…)")
      .option("--customer <id>", "customer id (cus_…)")
      .option("--expire <time>", "expiry instead of the policy's term: an ISO time or +30d", parseTime)
      .option("--max-machines <n>", "override the policy's machine limit", parseCount)
      .option("--entitle <feature[=value]>", "an entitlement override (repeatable)", parseEntitlement)
      .option("--custom-key <key>", "a custom license key instead of a generated one")
      .option("--meta <key=value>", "metadata (repeatable)", collectPairs)
      .option("--body <json>", "more request fields as protobuf JSON, or @file.json", parseBody),
  ).action(
    act<{
      policy: string;
      customer?: string;
      expire?: Timestamp;
      maxMachines?: number;
      entitle?: EntitlementInit[];
      customKey?: string;
      meta?: Record<string, string>;
      body?: Record<string, unknown>;
      idempotencyKey?: string;
    }>(async (ctx, o) => {
      const { message } = withBody(CreateLicenseRequestSchema, o.body, {
        tenantId: ctx.tenant,
        policyId: o.policy,
        customerId: o.customer,
        expireTime: o.expire,
        maxMachines: o.maxMachines,
        entitlementOverrides: o.entitle,
        customKey: o.customKey,
        metadata: o.meta,
        idempotencyKey: idempotencyKey(o),
      });
      const res = await ctx.client(LicensingService).createLicense(message);
      showLicense(ctx, res.license, { key: res.key });
      note(ctx, "keep the key now: it is shown once (`license reveal-key` works only where keys are kept encrypted)");
    }),
  );
  listOptions(
    license
      .command("list")
      .description("list licenses")
      .option("--product <id>", "only this product's (prod_…)")
      .option("--customer <id>", "only this customer's (cus_…)")
      .option("--status <status>", "active, suspended, expired or revoked", enumParser(LicenseStatusSchema))
      .option("--expire-before <time>", "only those expiring before: an ISO time or +30d", parseTime),
  ).action(
    act<ListOptions & { product?: string; customer?: string; status?: number; expireBefore?: Timestamp }>(
      async (ctx, o) => {
        const page = await collectPages(o, async (pageSize, pageToken) => {
          const r = await ctx.client(LicensingService).listLicenses({
            tenantId: ctx.tenant,
            productId: o.product ?? "",
            customerId: o.customer ?? "",
            status: o.status,
            expireBefore: o.expireBefore,
            pageSize,
            pageToken,
          });
          return { items: r.licenses, next: r.nextPageToken };
        });
        printList(ctx, "licenses", LicenseSchema, page, [
          { header: "ID", value: (l) => l.id },
          { header: "STATUS", value: (l) => enumText(LicenseStatusSchema, l.status), status: true },
          { header: "KEY", value: (l) => l.keyPrefix },
          { header: "POLICY", value: (l) => l.policyId },
          { header: "CUSTOMER", value: (l) => l.customerId },
          { header: "EXPIRES", value: (l) => time(l.expireTime) || "never" },
        ]);
      },
    ),
  );
  license
    .command("show")
    .description("show a license")
    .argument("<id>", "license id (lic_…)")
    .action(
      act(async (ctx, _o, [id]) => {
        const res = await ctx.client(LicensingService).getLicense({ tenantId: ctx.tenant, id });
        showLicense(ctx, res.license);
      }),
    );
  mutationOptions(
    license
      .command("update")
      .description("change a license's expiry, machine limit, overrides or metadata (only the fields given change)")
      .argument("<id>", "license id (lic_…)")
      .option("--expire <time>", "new expiry: an ISO time or +30d", parseTime)
      .option("--max-machines <n>", "machine limit", parseCount)
      .option("--entitle <feature[=value]>", "entitlement overrides, replacing them (repeatable)", parseEntitlement)
      .option("--meta <key=value>", "metadata, replacing all of it (repeatable)", collectPairs),
  ).action(
    act<{
      expire?: Timestamp;
      maxMachines?: number;
      entitle?: EntitlementInit[];
      meta?: Record<string, string>;
      idempotencyKey?: string;
    }>(async (ctx, o, [id]) => {
      const mask = updateMask(o, {
        expire: "expire_time",
        maxMachines: "max_machines",
        entitle: "entitlement_overrides",
        meta: "metadata",
      });
      if (mask.paths.length === 0)
        throw new UsageError("nothing to change: give at least one field's flag (see --help)");
      const { message } = withBody(UpdateLicenseRequestSchema, undefined, {
        tenantId: ctx.tenant,
        id,
        expireTime: o.expire,
        maxMachines: o.maxMachines,
        entitlementOverrides: o.entitle,
        metadata: o.meta,
        updateMask: mask,
        idempotencyKey: idempotencyKey(o),
      });
      const res = await ctx.client(LicensingService).updateLicense(message);
      showLicense(ctx, res.license);
    }),
  );
  const verbs = [
    ["suspend", "suspend a license: it stops validating until reinstated", "suspendLicense"],
    ["reinstate", "reinstate a suspended license", "reinstateLicense"],
    ["renew", "renew a license for another term of its policy", "renewLicense"],
    ["revoke", "revoke a license for good", "revokeLicense"],
    ["delete", "delete a license", "deleteLicense"],
  ] as const;
  for (const [verb, description, method] of verbs)
    mutationOptions(license.command(verb).description(description).argument("<id>", "license id (lic_…)")).action(
      act<{ idempotencyKey?: string }>(async (ctx, o, [id]) => {
        const res = await ctx
          .client(LicensingService)
          [method]({ tenantId: ctx.tenant, id, idempotencyKey: idempotencyKey(o) });
        showLicense(ctx, res.license);
      }),
    );
  mutationOptions(
    license
      .command("transfer")
      .description("move a license to another customer and/or policy")
      .argument("<id>", "license id (lic_…)")
      .option("--customer <id>", "the new customer (cus_…)")
      .option("--policy <id>", "the new policy (pol_…)"),
  ).action(
    act<{ customer?: string; policy?: string; idempotencyKey?: string }>(async (ctx, o, [id]) => {
      if (!o.customer && !o.policy) throw new UsageError("give --customer or --policy (or both)");
      const res = await ctx.client(LicensingService).transferLicense({
        tenantId: ctx.tenant,
        id,
        customerId: o.customer ?? "",
        policyId: o.policy ?? "",
        idempotencyKey: idempotencyKey(o),
      });
      showLicense(ctx, res.license);
    }),
  );
  license
    .command("reveal-key")
    .description("print a license's key again (only where the server keeps keys encrypted)")
    .argument("<id>", "license id (lic_…)")
    .action(
      act(async (ctx, _o, [id]) => {
        const res = await ctx.client(LicensingService).revealLicenseKey({ tenantId: ctx.tenant, id });
        if (ctx.json) printJson({ key: res.key });
        else process.stdout.write(`${res.key}\n`);
      }),
    );
  license
    .command("file")
    .description("issue a signed license file for offline use")
    .argument("<id>", "license id (lic_…)")
    .option("--out <file>", "write the file here (else stdout)")
    .option("--fingerprint <fp>", "bind it to this machine")
    .option("--encrypt", "encrypt it with the license key (only its holder can read it)")
    .option("--format <format>", "ed25519 (default) or hmac", enumParser(LicenseFileFormatSchema))
    .option("--ttl <d>", "valid for this long (default: until the license expires)", parseDuration)
    .action(
      act<{
        out?: string;
        fingerprint?: string;
        encrypt?: boolean;
        format?: number;
        ttl?: ReturnType<typeof parseDuration>;
      }>(async (ctx, o, [id]) => {
        const res = await ctx.client(LicensingService).issueLicenseFile({
          tenantId: ctx.tenant,
          licenseId: id,
          fingerprint: o.fingerprint ?? "",
          encrypt: o.encrypt === true,
          format: o.format,
          ttl: o.ttl,
        });
        if (o.out) writeFileSync(o.out, `${res.licenseFile}\n`);
        if (ctx.json)
          return printJson({
            licenseFile: res.licenseFile,
            kid: res.kid,
            expireTime: time(res.expireTime),
            out: o.out,
          });
        if (!o.out) return void process.stdout.write(`${res.licenseFile}\n`);
        printRecord(ctx, [
          ["out", o.out],
          ["kid", res.kid],
          ["expires", time(res.expireTime) || "never"],
        ]);
      }),
    );
  license
    .command("validate")
    .description("validate a license key as a product would (exit 4 when it is not valid)")
    .argument("<key>", "the license key")
    .option("--product <code>", "the product code it must be for")
    .option("--fingerprint <fp>", "the machine asking")
    .option("--user <user>", "the user asking: an e-mail or the vendor's user id")
    .option(
      "--component <name=fingerprint>",
      "a hardware component of the machine asking (repeatable)",
      collectComponents,
    )
    .option("--feature <name>", "a feature that must be entitled (repeatable)", collect)
    .option("--keys <file>", "the signing keys that check the signed answer (`keys list --json`); else fetched")
    .action(
      act<{
        product?: string;
        fingerprint?: string;
        user?: string;
        component?: { name: string; fingerprint: string }[];
        feature?: string[];
        keys?: string;
      }>(async (ctx, o, [key]) => {
        const nonce = randomBytes(12).toString("base64url");
        const scope = {
          productCode: o.product ?? "",
          fingerprint: o.fingerprint ?? "",
          user: o.user ?? "",
          components: o.component ?? [],
          entitlements: o.feature ?? [],
        };
        const res = await ctx.client(LicensingService).validateLicense({ key, ...scope, nonce });
        // The answer is signed over our nonce and the scope we asked: checked here, so neither a replayed answer,
        // nor one for another machine or user, nor one from something impersonating the server passes for ours.
        const check = await verifyValidationResponse(res, { keys: await signingKeys(ctx, o.keys), nonce, scope });
        if (ctx.json)
          printJson({
            ...(messageJson(ValidateLicenseResponseSchema, res) as Record<string, unknown>),
            answer: check.code,
          });
        else
          printRecord(ctx, [
            ["answer", check.verified ? `${check.code} (signed by ${res.kid})` : check.code],
            ["valid", String(res.valid)],
            ["code", enumText(ValidationCodeSchema, res.code)],
            ["detail", res.detail],
            ["license", res.license?.id ?? ""],
            ["status", res.license ? enumText(LicenseStatusSchema, res.license.status) : ""],
            ["expires", time(res.license?.expireTime) || (res.license ? "never" : "")],
            ["features", res.features.join(", ")],
          ]);
        return check.valid ? EXIT.ok : EXIT.negative;
      }),
    );
  licenseUserCommands(license);
}

/** `licensd license user add|list|remove`: the users attached to a license (at most its policy's max_users). */
function licenseUserCommands(license: Command): void {
  const user = license.command("user").description("users attached to a license (validation scoped to a user)");
  const showUser = (ctx: Context, u: LicenseUser | undefined) =>
    ctx.json
      ? printJson({ licenseUser: u && messageJson(LicenseUserSchema, u) })
      : printRecord(ctx, u ? fieldsOf(LicenseUserSchema, u) : []);
  mutationOptions(
    user
      .command("add")
      .description("attach a user to a license (FAILED_PRECONDITION when the policy's max_users is reached)")
      .argument("<license>", "license id (lic_…)")
      .argument("<user>", "an e-mail or the vendor's user id")
      .option("--name <name>", "a name for people")
      .option("--meta <key=value>", "metadata (repeatable)", collectPairs),
  ).action(
    act<{ name?: string; meta?: Record<string, string>; idempotencyKey?: string }>(async (ctx, o, [licenseId, who]) => {
      const res = await ctx.client(LicensingService).addLicenseUser({
        tenantId: ctx.tenant,
        licenseId,
        user: who,
        name: o.name ?? "",
        metadata: o.meta ?? {},
        idempotencyKey: idempotencyKey(o),
      });
      showUser(ctx, res.licenseUser);
    }),
  );
  listOptions(
    user.command("list").description("list a license's users").argument("<license>", "license id (lic_…)"),
  ).action(
    act<ListOptions>(async (ctx, o, [licenseId]) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx
          .client(LicensingService)
          .listLicenseUsers({ tenantId: ctx.tenant, licenseId, pageSize, pageToken });
        return { items: r.licenseUsers, next: r.nextPageToken };
      });
      printList(ctx, "licenseUsers", LicenseUserSchema, page, [
        { header: "ID", value: (u) => u.id },
        { header: "USER", value: (u) => u.user },
        { header: "NAME", value: (u) => u.name },
        { header: "ADDED", value: (u) => time(u.createTime) },
      ]);
    }),
  );
  mutationOptions(
    user
      .command("remove")
      .description("detach a user from a license")
      .argument("<license>", "license id (lic_…)")
      .argument("<user>", "the user, as added (an e-mail in any case)"),
  ).action(
    act<{ idempotencyKey?: string }>(async (ctx, o, [licenseId, who]) => {
      const res = await ctx.client(LicensingService).removeLicenseUser({
        tenantId: ctx.tenant,
        licenseId,
        user: who,
        idempotencyKey: idempotencyKey(o),
      });
      showUser(ctx, res.licenseUser);
    }),
  );
}
