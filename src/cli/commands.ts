/* Every command that talks to a running server over its API (main.ts adds serve and migrate). */
// grpc.health.v1 is not one of licensd's services, so the client package does not carry it: the server's copy.
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/ts/health/v1/health_pb.js";
import type { Command } from "commander";
import { activationCommands } from "./activation.js";
import { auditCommands } from "./audit.js";
import { catalogCommands } from "./catalog.js";
import { act } from "./command.js";
import { importFile } from "./import.js";
import { licenseCommands } from "./licenses.js";
import { paint, printJson } from "./output.js";
import { paymentCommands } from "./payments.js";
import { EXIT, UsageError } from "./runtime.js";
import { tenantCommands } from "./tenants.js";
import { usageCommands } from "./usage.js";
import { webhookCommands } from "./webhooks.js";

export function registerCommands(program: Command): void {
  program
    .command("health")
    .description("ask a running server for its health (grpc.health.v1 Check); exit 0 when SERVING, else 4")
    .option("--service <name>", "one service, e.g. licensd.tenant.v1.TenantService", "")
    .action(
      act<{ service: string }>(async (ctx, o) => {
        const res = await ctx.client(Health).check({ service: o.service });
        const status = HealthCheckResponse_ServingStatus[res.status];
        if (ctx.json) printJson({ status, service: o.service, url: ctx.url });
        else process.stdout.write(`${paint(ctx, status)}\n`);
        return res.status === HealthCheckResponse_ServingStatus.SERVING ? EXIT.ok : EXIT.negative;
      }),
    );
  tenantCommands(program);
  catalogCommands(program);
  licenseCommands(program);
  activationCommands(program);
  usageCommands(program);
  auditCommands(program);
  webhookCommands(program);
  paymentCommands(program);
  program
    .command("import")
    .description(
      "import existing licenses from a JSON-lines file (a DataTools issuance log, or Vinzy licenses with their " +
        "keys); a bad row is reported, the rest go on; a progress bar on a terminal",
    )
    .argument("<file>", "JSON lines, one license per line")
    .requiredOption("--product <id>", "the product the licenses are for (prod_…); tiers name its policies")
    .option("--format <format>", "datatools or vinzy", "datatools")
    .action(
      act<{ product: string; format: string }>(async (ctx, o, [file]) => {
        if (o.format !== "datatools" && o.format !== "vinzy") throw new UsageError("--format: datatools or vinzy");
        const ok = await importFile(ctx, { file, format: o.format, product: o.product });
        return ok ? EXIT.ok : EXIT.server;
      }),
    );
}
