import cluster from "node:cluster";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { toJsonString, type DescService } from "@bufbuild/protobuf";
import { createApp, openStorage, type App } from "../app.js";
import { ConfigError, loadConfig, loadDevSecrets, type Config } from "../config.js";
import { createLogger, type Logger } from "../platform/logger.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/ts/health/v1/health_pb.js";
import {
  TenantService,
  CreateTenantResponseSchema,
  ListTenantsResponseSchema,
  CreateApiKeyResponseSchema,
} from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { verifyAuditLog } from "./audit-verify.js";
import { AuditService, PruneAuditLogResponseSchema } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { importFile } from "./import.js";
import { createOfflineActivationRequest } from "@licensd/client";
import {
  ActivationService,
  RotateSigningKeyResponseSchema,
} from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import packageJson from "../../package.json" with { type: "json" };

const program = new Command()
  .name("licensd")
  .description(
    "Self-hosted licensing, activation and usage metering. Settings come from LICENSD_* environment variables.",
  )
  .version(packageJson.version, "-V, --version", "print the licensd version");

const positiveInt = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new InvalidArgumentError("a whole number from 1 to 256");
  return n;
};

program
  .command("serve")
  .description("start the server (gRPC, gRPC-Web and Connect on one port); applies pending migrations first")
  .option("-w, --workers <n>", "processes sharing the port (node:cluster)", positiveInt)
  .action(async (opts: { workers?: number }) => {
    const config = configOrExit();
    const workers = opts.workers ?? config.workers;
    if (cluster.isPrimary && workers > 1) await servePrimary(config, workers);
    else await serveOne(config, { migrate: cluster.isPrimary });
  });

program
  .command("migrate")
  .description("apply pending database migrations and exit")
  .action(async () => {
    const config = configOrExit();
    const logger = createLogger(config.logLevel);
    const { db, embedded } = await openStorage(config, logger, { migrate: true });
    await db.close();
    await embedded?.stop();
  });

program
  .command("health")
  .description("ask a running server for its health (grpc.health.v1 Check); exit 0 when SERVING")
  .option("--url <url>", "server URL", process.env.LICENSD_URL ?? "http://127.0.0.1:8080")
  .option("--service <name>", "one service, e.g. licensd.tenant.v1.TenantService", "")
  .action(async (opts: { url: string; service: string }) => {
    const client = createClient(Health, transport(opts.url));
    const res = await client.check({ service: opts.service });
    const status = HealthCheckResponse_ServingStatus[res.status];
    console.log(status);
    process.exitCode = res.status === HealthCheckResponse_ServingStatus.SERVING ? 0 : 1;
  });

const tenant = program.command("tenant").description("manage tenants through a running server (super-admin)");
tenant
  .command("create")
  .requiredOption("--name <name>", "the vendor's name")
  .option("--url <url>", "server URL", process.env.LICENSD_URL ?? "http://127.0.0.1:8080")
  .action(async (opts: { name: string; url: string }) => {
    const res = await apiClient(TenantService, opts.url).createTenant({ name: opts.name });
    console.log(toJsonString(CreateTenantResponseSchema, res, { prettySpaces: 2 }));
  });
tenant
  .command("list")
  .option("--url <url>", "server URL", process.env.LICENSD_URL ?? "http://127.0.0.1:8080")
  .action(async (opts: { url: string }) => {
    const res = await apiClient(TenantService, opts.url).listTenants({ pageSize: 1000 });
    console.log(toJsonString(ListTenantsResponseSchema, res, { prettySpaces: 2 }));
  });

program
  .command("api-key")
  .description("create an API key for a tenant through a running server (super-admin); prints its secret once")
  .requiredOption("--tenant <id>", "tenant id (ten_…)")
  .option("--name <name>", "label", "cli")
  .option("--scope <scope...>", "admin, read and/or ingest", ["admin"])
  .option("--url <url>", "server URL", process.env.LICENSD_URL ?? "http://127.0.0.1:8080")
  .action(async (opts: { tenant: string; name: string; scope: string[]; url: string }) => {
    const scopes = opts.scope.map((s) => {
      const v = ApiKeyScope[s.toUpperCase() as keyof typeof ApiKeyScope];
      if (v === undefined || v === ApiKeyScope.UNSPECIFIED) throw new InvalidArgumentError(`unknown scope ${s}`);
      return v;
    });
    const res = await apiClient(TenantService, opts.url).createApiKey({
      tenantId: opts.tenant,
      name: opts.name,
      scopes,
    });
    console.log(toJsonString(CreateApiKeyResponseSchema, res, { prettySpaces: 2 }));
  });

const audit = program.command("audit").description("verify and maintain tenants' audit logs");
audit
  .command("verify")
  .description(
    "check a tenant's signed checkpoint against the published signing keys, its consistency with the checkpoint " +
      "saved by the last run (--state), and optionally an entry's inclusion (--event, or --seq); trusts nothing " +
      "the server says without proof",
  )
  .option("--url <url>", "server URL", process.env.LICENSD_URL ?? "http://127.0.0.1:8080")
  .option("--tenant <id>", "tenant id (needed with the super-admin key)", "")
  .option("--key <key>", "API key (read scope); default LICENSD_API_KEY, else the super-admin key")
  .option("--state <file>", "where the last verified checkpoint is kept between runs")
  .option("--seq <n>", "also prove that the server's hash for entry n is in the log", (v) => positiveBig(v))
  .option("--event <id>", "also prove that this entry (evt_…), hashed here from its fields, is in the log")
  .action(async (opts: { url: string; tenant: string; key?: string; state?: string; seq?: bigint; event?: string }) => {
    const ok = await verifyAuditLog({ ...opts, key: opts.key ?? process.env.LICENSD_API_KEY });
    process.exitCode = ok ? 0 : 1;
  });
audit
  .command("prune")
  .description(
    "the retention job (PruneAuditLog): remove a tenant's oldest entries, keeping a signed record of the cut (and " +
      "the Merkle tree, so proofs still hold)",
  )
  .option("--tenant <id>", "tenant id (needed with the super-admin key)", "")
  .option("--through-seq <n>", "remove entries 1..n", (v) => positiveBig(v))
  .option("--older-than-days <d>", "remove entries older than d days", (v) => positiveBig(v))
  .option("--key <key>", "an admin API key; default LICENSD_API_KEY, else the super-admin key")
  .option("--url <url>", "server URL", process.env.LICENSD_URL ?? "http://127.0.0.1:8080")
  .action(async (opts: { tenant: string; throughSeq?: bigint; olderThanDays?: bigint; key?: string; url: string }) => {
    if ((opts.throughSeq === undefined) === (opts.olderThanDays === undefined))
      throw new InvalidArgumentError("give --through-seq or --older-than-days");
    const cut =
      opts.throughSeq !== undefined
        ? ({ case: "throughSeq", value: opts.throughSeq } as const)
        : ({ case: "olderThan", value: { seconds: opts.olderThanDays! * 86_400n, nanos: 0 } } as const);
    const res = await apiClient(
      AuditService,
      opts.url,
      opts.key ?? process.env.LICENSD_API_KEY ?? superAdminKey(),
    ).pruneAuditLog({ tenantId: opts.tenant, cut });
    console.log(toJsonString(PruneAuditLogResponseSchema, res, { alwaysEmitImplicit: true }));
  });

program
  .command("import")
  .description(
    "import existing licenses from a JSON-lines file (a DataTools issuance log, or Vinzy licenses with their " +
      "keys); a bad row is reported, the rest go on",
  )
  .argument("<file>", "JSON lines, one license per line")
  .requiredOption("--product <id>", "the product the licenses are for (prod_…); tiers name its policies")
  .option("--format <format>", "datatools or vinzy", "datatools")
  .option("--tenant <id>", "tenant id (needed with the super-admin key)", "")
  .option("--key <key>", "an admin API key; default LICENSD_API_KEY, else the super-admin key")
  .option("--url <url>", "server URL", process.env.LICENSD_URL ?? "http://127.0.0.1:8080")
  .action(
    async (file: string, opts: { product: string; format: string; tenant: string; key?: string; url: string }) => {
      if (opts.format !== "datatools" && opts.format !== "vinzy")
        throw new InvalidArgumentError("--format is datatools or vinzy");
      const key = opts.key ?? process.env.LICENSD_API_KEY ?? superAdminKey();
      const ok = await importFile({
        file,
        format: opts.format,
        product: opts.product,
        tenant: opts.tenant,
        url: opts.url,
        key,
      });
      process.exitCode = ok ? 0 : 1;
    },
  );

const activation = program
  .command("activation")
  .description("air-gapped activation: a request file from the offline machine, a response file back");
activation
  .command("request")
  .description(
    "on the machine that cannot reach licensd: write an activation request file (it names the license by the key's " +
      "SHA-256 and is MACed with the key; the key itself is not in it)",
  )
  .requiredOption("--license-key <key>", "the license key")
  .requiredOption("--fingerprint <fingerprint>", "this machine's fingerprint")
  .option("--hostname <name>", "host name to record", os.hostname())
  .option("--platform <platform>", "platform to record", `${process.platform}-${process.arch}`)
  .requiredOption("--out <file>", "where to write the request file")
  .action((opts: { licenseKey: string; fingerprint: string; hostname: string; platform: string; out: string }) => {
    const text = createOfflineActivationRequest({
      key: opts.licenseKey,
      fingerprint: opts.fingerprint,
      hostname: opts.hostname,
      platform: opts.platform,
      cores: os.availableParallelism(),
    });
    writeFileSync(opts.out, `${text}\n`, { mode: 0o600 });
    console.log(`wrote ${opts.out}: carry it to your vendor, who answers with a response file`);
  });
activation
  .command("respond")
  .description(
    "at the vendor: upload a request file (ActivateOffline) and write the response file (a lease bound to that " +
      "machine) to carry back",
  )
  .argument("<request-file>", "the request file")
  .requiredOption("--out <file>", "where to write the response file")
  .option("--tenant <id>", "tenant id (needed with the super-admin key)", "")
  .option("--key <key>", "an admin API key; default LICENSD_API_KEY, else the super-admin key")
  .option("--url <url>", "server URL", process.env.LICENSD_URL ?? "http://127.0.0.1:8080")
  .action(async (file: string, opts: { out: string; tenant: string; key?: string; url: string }) => {
    const client = apiClient(ActivationService, opts.url, opts.key ?? process.env.LICENSD_API_KEY ?? superAdminKey());
    const res = await client.activateOffline({ tenantId: opts.tenant, request: readFileSync(file, "utf8") });
    writeFileSync(opts.out, `${res.lease!.token}\n`);
    console.log(
      JSON.stringify({
        machine_id: res.machine!.id,
        fingerprint: res.machine!.fingerprint,
        expires_at: res.lease!.expireTime ? timestampDate(res.lease!.expireTime).toISOString() : null,
        out: opts.out,
      }),
    );
  });

const keys = program
  .command("keys")
  .description("the Ed25519 keys that sign leases, license files, validations and audit checkpoints");
keys
  .command("rotate")
  .description(
    "start a new signing key through a running server (RotateSigningKey, super-admin); the old one keeps verifying " +
      "for --retire-after seconds, then retires",
  )
  .addOption(
    new Option("--retire-after <seconds>", "how long what the old key signed stays verifiable")
      .argParser(positiveBig)
      .default(2_592_000n, "2592000, 30 days"),
  )
  .option("--key <key>", "the super-admin key; default LICENSD_SUPER_ADMIN_KEY, else the development secrets file")
  .option("--url <url>", "server URL", process.env.LICENSD_URL ?? "http://127.0.0.1:8080")
  .action(async (opts: { retireAfter: bigint; key?: string; url: string }) => {
    const res = await apiClient(ActivationService, opts.url, opts.key ?? superAdminKey()).rotateSigningKey({
      retireAfter: { seconds: opts.retireAfter, nanos: 0 },
    });
    console.log(toJsonString(RotateSigningKeyResponseSchema, res, { prettySpaces: 2 }));
  });

function positiveBig(v: string): bigint {
  if (!/^\d{1,15}$/.test(v) || v === "0") throw new InvalidArgumentError("a positive whole number");
  return BigInt(v);
}

function configOrExit(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`licensd: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
}

function transport(url: string): Transport {
  return createConnectTransport({ baseUrl: url, httpVersion: "1.1" });
}

/** The super-admin key: LICENSD_SUPER_ADMIN_KEY, else the development secrets file. */
function superAdminKey(): string {
  let key = process.env.LICENSD_SUPER_ADMIN_KEY;
  const dataDir = path.resolve(process.env.LICENSD_DATA_DIR ?? ".licensd");
  if (!key && existsSync(path.join(dataDir, "secrets.json"))) key = loadDevSecrets(dataDir).superAdminKey;
  if (!key) {
    console.error("licensd: set LICENSD_SUPER_ADMIN_KEY");
    process.exit(2);
  }
  return key;
}

/** A client authenticated with `key`, else as the super-admin. */
function apiClient<T extends DescService>(service: T, url: string, key = superAdminKey()): Client<T> {
  const authed = createConnectTransport({
    baseUrl: url,
    httpVersion: "1.1",
    interceptors: [
      (next) => (req) => {
        req.header.set("authorization", `Bearer ${key}`);
        return next(req);
      },
    ],
  });
  return createClient(service, authed);
}

/** The banner with the super-admin key, on the start that generated it only (stderr, never the log). */
function announceGeneratedSecrets(config: Config) {
  if (!config.generated.includes("LICENSD_SUPER_ADMIN_KEY")) return;
  const line = "=".repeat(78);
  process.stderr.write(
    `\n${line}\n  DEVELOPMENT MODE: secrets were generated and kept in ${path.join(config.dataDir, "secrets.json")}\n` +
      `  super-admin key:  ${config.superAdminKey}\n` +
      `  Use it as:  Authorization: Bearer <key>.  Never run like this in production\n` +
      "  (LICENSD_ENV=production requires LICENSD_DATABASE_URL, LICENSD_SUPER_ADMIN_KEY, LICENSD_DATA_KEY).\n" +
      `${line}\n\n`,
  );
}

/**
 * On a start that did not generate them: one line saying where the development secrets are kept (never the secrets).
 */
function noteLoadedSecrets(config: Config, logger: Logger) {
  if (config.devSecretsFile !== undefined && config.generated.length === 0)
    logger.info({ file: config.devSecretsFile }, "development secrets loaded");
}

async function serveOne(config: Config, opts: { migrate: boolean }) {
  if (cluster.isPrimary) announceGeneratedSecrets(config);
  let app: App;
  try {
    app = await createApp(config, { migrate: opts.migrate });
  } catch (err) {
    console.error(`licensd: failed to start: ${(err as Error).message}`);
    process.exit(1);
  }
  if (cluster.isPrimary) noteLoadedSecrets(config, app.logger);
  const stop = () => {
    // SIGTERM always ends the process: past the drain period and a margin, a shutdown that
    // still waits (a pool client never released, a database that does not stop) is reported
    // with the step it is stuck in, and the process exits with a failure.
    setTimeout(() => {
      app.logger.error({ stage: app.closingStage() }, "shutdown did not finish in time; exiting");
      process.exit(1);
    }, config.shutdownTimeoutMs + 20_000).unref();
    app.close().then(
      () => process.exit(0),
      (err: unknown) => {
        app.logger.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

/** The cluster primary: owns the embedded database and the migrations, forks the workers. */
async function servePrimary(config: Config, workers: number) {
  announceGeneratedSecrets(config);
  const logger = createLogger(config.logLevel);
  noteLoadedSecrets(config, logger);
  const { db, url, embedded } = await openStorage(config, logger, { migrate: true });
  await db.close();
  let stopping = false;
  const env = { ...process.env, LICENSD_DATABASE_URL: url };
  const ready = new Set<number>();
  const restarts: number[] = [];
  // The embedded database's outage count when each worker was forked: one that fails to start
  // during an outage (its postmaster being restarted) is started again once it is back.
  const forkedAt = new Map<number, number>();
  const fork = () => forkedAt.set(cluster.fork(env).id, embedded?.outages().count ?? 0);
  for (let i = 0; i < workers; i++) fork();
  cluster.on("listening", (worker) => ready.add(worker.id));
  cluster.on("exit", (worker, code, signal) => {
    if (stopping) return;
    // A worker that dies before listening would die again: give up instead of looping.
    // One that dies later is replaced, at most 5 times a minute.
    const outages = embedded?.outages();
    if (!ready.has(worker.id) && outages !== undefined && (outages.down || outages.count !== forkedAt.get(worker.id))) {
      logger.warn(
        { worker: worker.process.pid, code, signal },
        "a worker could not start while the embedded PostgreSQL was down; starting another once it is back",
      );
      void (async () => {
        while (!stopping && embedded?.outages().down) await new Promise((r) => setTimeout(r, 500));
        if (!stopping) fork();
      })();
      return;
    }
    const now = Date.now();
    restarts.push(now);
    while (restarts[0] < now - 60_000) restarts.shift();
    if (!ready.has(worker.id) || restarts.length > 5) {
      logger.fatal(
        { worker: worker.process.pid, code, signal },
        ready.has(worker.id) ? "workers keep dying; stopping" : "a worker failed to start; stopping",
      );
      void stop(1);
      return;
    }
    logger.error({ worker: worker.process.pid, code, signal }, "worker died; starting another");
    fork();
  });
  async function stop(exitCode = 0) {
    if (stopping) return;
    stopping = true;
    embedded?.endSupervision();
    const all = Object.values(cluster.workers ?? {}).filter((w) => w !== undefined);
    await Promise.all(
      all.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.isDead()) return resolve();
            w.once("exit", () => resolve());
            w.process.kill("SIGTERM");
          }),
      ),
    );
    await embedded?.stop();
    process.exit(exitCode);
  }
  process.once("SIGTERM", () => void stop());
  process.once("SIGINT", () => void stop());
  logger.info({ workers }, "licensd primary started");
}

program.parseAsync(process.argv).catch((err: unknown) => {
  console.error(`licensd: ${(err as Error).message}`);
  process.exit(1);
});
