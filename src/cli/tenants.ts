/* `licensd tenant …` and `licensd api-key …` (TenantService). */
import { TenantService } from "@licensd/client";
import { ApiKeyScope, ApiKeyScopeSchema, ApiKeySchema } from "@licensd/client/gen/licensd/tenant/v1/api_key_pb.js";
import { TenantSchema } from "@licensd/client/gen/licensd/tenant/v1/tenant_pb.js";
import {
  CreateApiKeyResponseSchema,
  CreateTenantResponseSchema,
  DeleteTenantResponseSchema,
  GetTenantResponseSchema,
  RevokeApiKeyResponseSchema,
  UpdateTenantResponseSchema,
} from "@licensd/client/gen/licensd/tenant/v1/tenant_service_pb.js";
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
import { note, printMessage } from "./output.js";
import { collectPairs, enumParser, parseTime } from "./parse.js";
import { UsageError } from "./runtime.js";

export function tenantCommands(program: Command): void {
  const tenant = program.command("tenant").description("tenants: the vendors this server serves (super-admin key)");
  mutationOptions(
    tenant
      .command("create")
      .description("create a tenant")
      .requiredOption("--name <name>", "the vendor's name")
      .option("--meta <key=value>", "metadata (repeatable)", collectPairs),
  ).action(
    act<{ name: string; meta?: Record<string, string>; idempotencyKey?: string }>(async (ctx, o) => {
      const res = await ctx
        .client(TenantService)
        .createTenant({ name: o.name, metadata: o.meta, idempotencyKey: idempotencyKey(o) });
      printMessage(
        ctx,
        { schema: CreateTenantResponseSchema, message: res },
        { schema: TenantSchema, message: res.tenant },
      );
    }),
  );
  listOptions(tenant.command("list").description("list tenants")).action(
    act<ListOptions>(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx.client(TenantService).listTenants({ pageSize, pageToken });
        return { items: r.tenants, next: r.nextPageToken };
      });
      printList(ctx, "tenants", TenantSchema, page, [
        { header: "ID", value: (t) => t.id },
        { header: "NAME", value: (t) => t.name },
        { header: "CREATED", value: (t) => time(t.createTime) },
      ]);
    }),
  );
  tenant
    .command("show")
    .description("show a tenant")
    .argument("<id>", "tenant id (ten_…)")
    .action(
      act(async (ctx, _o, [id]) => {
        const res = await ctx.client(TenantService).getTenant({ id });
        printMessage(
          ctx,
          { schema: GetTenantResponseSchema, message: res },
          { schema: TenantSchema, message: res.tenant },
        );
      }),
    );
  mutationOptions(
    tenant
      .command("update")
      .description("change a tenant's name or metadata (only the fields given change)")
      .argument("<id>", "tenant id (ten_…)")
      .option("--name <name>", "new name")
      .option("--meta <key=value>", "metadata, replacing all of it (repeatable)", collectPairs),
  ).action(
    act<{ name?: string; meta?: Record<string, string>; idempotencyKey?: string }>(async (ctx, o, [id]) => {
      const mask = updateMask(o, { name: "name", meta: "metadata" });
      if (mask.paths.length === 0) throw new UsageError("nothing to change: give --name or --meta");
      const res = await ctx.client(TenantService).updateTenant({
        tenant: { id, name: o.name ?? "", metadata: o.meta ?? {} },
        updateMask: mask,
        idempotencyKey: idempotencyKey(o),
      });
      printMessage(
        ctx,
        { schema: UpdateTenantResponseSchema, message: res },
        { schema: TenantSchema, message: res.tenant },
      );
    }),
  );
  mutationOptions(
    tenant
      .command("delete")
      .description("delete a tenant and everything it holds")
      .argument("<id>", "tenant id (ten_…)"),
  ).action(
    act<{ idempotencyKey?: string }>(async (ctx, o, [id]) => {
      const res = await ctx.client(TenantService).deleteTenant({ id, idempotencyKey: idempotencyKey(o) });
      printMessage(
        ctx,
        { schema: DeleteTenantResponseSchema, message: res },
        { schema: TenantSchema, message: res.tenant },
      );
    }),
  );

  const apiKey = program
    .command("api-key")
    .description("API keys of a tenant (the tenant's admin key, or the super-admin key with --tenant)");
  mutationOptions(
    apiKey
      .command("create")
      .description("create an API key; its secret is printed once and never again")
      .option("--name <name>", "label", "cli")
      .option(
        "--scope <scope>",
        "admin, read or ingest (repeatable; default admin)",
        (v: string, prev: ApiKeyScope[] = []) => [...prev, enumParser(ApiKeyScopeSchema)(v) as ApiKeyScope],
      )
      .option("--expire <time>", "when it stops working: an ISO time or +90d", parseTime),
  ).action(
    act<{ name: string; scope?: ApiKeyScope[]; expire?: ReturnType<typeof parseTime>; idempotencyKey?: string }>(
      async (ctx, o) => {
        const res = await ctx.client(TenantService).createApiKey({
          tenantId: ctx.tenant,
          name: o.name,
          scopes: o.scope ?? [ApiKeyScope.ADMIN],
          expireTime: o.expire,
          idempotencyKey: idempotencyKey(o),
        });
        printMessage(
          ctx,
          { schema: CreateApiKeyResponseSchema, message: res },
          { schema: ApiKeySchema, message: res.apiKey },
          [["secret", res.secret]],
        );
        note(ctx, "keep the secret now: it is not stored and cannot be shown again");
      },
    ),
  );
  listOptions(
    apiKey
      .command("list")
      .description("list API keys (never their secrets)")
      .option("--revoked", "include revoked keys"),
  ).action(
    act<ListOptions & { revoked?: boolean }>(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx
          .client(TenantService)
          .listApiKeys({ tenantId: ctx.tenant, pageSize, pageToken, showRevoked: o.revoked === true });
        return { items: r.apiKeys, next: r.nextPageToken };
      });
      printList(ctx, "apiKeys", ApiKeySchema, page, [
        { header: "ID", value: (k) => k.id },
        { header: "NAME", value: (k) => k.name },
        { header: "SCOPES", value: (k) => k.scopes.map((s) => enumText(ApiKeyScopeSchema, s)).join(",") },
        { header: "PREFIX", value: (k) => k.prefix },
        { header: "EXPIRES", value: (k) => time(k.expireTime) },
        { header: "STATUS", value: (k) => (k.revokeTime ? "revoked" : "active"), status: true },
      ]);
    }),
  );
  mutationOptions(apiKey.command("revoke").description("revoke an API key").argument("<id>", "API key id")).action(
    act<{ idempotencyKey?: string }>(async (ctx, o, [id]) => {
      const res = await ctx.client(TenantService).revokeApiKey({ id, idempotencyKey: idempotencyKey(o) });
      printMessage(
        ctx,
        { schema: RevokeApiKeyResponseSchema, message: res },
        { schema: ApiKeySchema, message: res.apiKey },
      );
    }),
  );
}
