import cluster from "node:cluster";
import path from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import type { App } from "../app.js";
import { ConfigError, loadConfig, type Config } from "../config.js";
import type { Logger } from "../platform/logger.js";
import packageJson from "../../package.json" with { type: "json" };
import { type GlobalOptions, reportFailure } from "./runtime.js";
import { parseCount } from "./parse.js";

/*
 * Only serve, migrate and data-key rotate/check open the database; they load the server (app.ts and MikroORM) when
 * they run, so every other command starts fast and needs nothing but a URL and a key.
 */
const program = new Command()
  .name("licensd")
  .description(
    "Self-hosted licensing, activation and usage metering.\n" +
      "serve, migrate and data-key read LICENSD_* settings and open the database; every other command talks to a " +
      "running server over its API (--url, --api-key). docs/cli.md has the whole reference.",
  )
  .version(packageJson.version, "-V, --version", "print the licensd version")
  .option("--url <url>", "the server (env LICENSD_URL; default http://127.0.0.1:8080)")
  .option("--api-key <key>", "an API key (env LICENSD_API_KEY; else LICENSD_SUPER_ADMIN_KEY)")
  .addOption(new Option("--key <key>", "same as --api-key").hideHelp())
  .option("--tenant <id>", "the tenant to act on with the super-admin key (env LICENSD_TENANT)")
  .option("--json", "print one JSON document on stdout (errors too), for scripts")
  .addOption(new Option("--timeout <seconds>", "how long to wait for an answer").argParser(parseCount).default(30))
  .exitOverride();

/** Set by serve: its process lives on after the command's action returns. */
let isServing = false;

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
    isServing = true;
    const workers = opts.workers ?? config.workers;
    if (cluster.isPrimary && workers > 1) await servePrimary(config, workers);
    else await serveOne(config, { migrate: cluster.isPrimary });
  });

program
  .command("migrate")
  .description("apply pending database migrations and exit")
  .action(async () => {
    const config = configOrExit();
    const { createLogger } = await import("../platform/logger.js");
    const logger = createLogger(config.logLevel);
    const { openStorage } = await import("../app.js");
    const { db, embedded } = await openStorage(config, logger, { migrate: true });
    await db.close();
    await embedded?.stop();
  });

// serve and migrate need none of the API commands, nor the client package and the second copy of the generated code
// those load (about 10 MB of a server's idle heap): the command line names them first, and they alone are registered.
// Any other command line, `licensd --help` included, registers every command.
if (process.argv[2] !== "serve" && process.argv[2] !== "migrate") {
  const [{ dataKeyCommands }, { registerCommands }] = await Promise.all([
    import("./data-key.js"),
    import("./commands.js"),
  ]);
  dataKeyCommands(program, configOrExit);
  registerCommands(program);
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
  const { createApp } = await import("../app.js");
  let app: App;
  try {
    app = await createApp(config, { migrate: opts.migrate });
  } catch (err) {
    console.error(`licensd: failed to start: ${(err as Error).message}`);
    process.exit(1);
  }
  if (cluster.isPrimary) noteLoadedSecrets(config, app.logger);
  collectStartupGarbage();
  const stop = () => {
    // SIGTERM always ends the process: past the drain period and a margin, a shutdown that
    // still waits (a pool client never released, a database that does not stop) is reported
    // with the step it is stuck in, and the process exits with a failure.
    setTimeout(
      () => {
        app.logger.error({ stage: app.closingStage() }, "shutdown did not finish in time; exiting");
        process.exit(1);
      },
      config.shutdownDelayMs + config.shutdownTimeoutMs + 20_000,
    ).unref();
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

/**
 * Startup (about a thousand modules, migrations, entity discovery) grows V8's young generation to its maximum
 * (2 × 16 MB) and leaves its garbage in the old one; an idle server allocates too little for V8 to collect again,
 * so that memory would stay resident until load comes. One memory-reducing collection once serving begins
 * returns it (BENCHMARKS.md, "Memory"). `gc` is there when bin/licensd.js started the process (--expose-gc).
 */
function collectStartupGarbage() {
  const gc = (globalThis as { gc?: (options: object) => void }).gc;
  gc?.({ type: "major", execution: "sync", flavor: "last-resort" });
}

/** The cluster primary: owns the embedded database and the migrations, forks the workers. */
async function servePrimary(config: Config, workers: number) {
  announceGeneratedSecrets(config);
  const [{ createLogger }, { openStorage }] = await Promise.all([import("../platform/logger.js"), import("../app.js")]);
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

program.parseAsync(process.argv).then(
  () => {
    // Streams and HTTP/2 sessions of a finished command must not hold the process open.
    if (!isServing) process.exit(process.exitCode ?? 0);
  },
  (err: unknown) => {
    const opts = program.opts() as GlobalOptions;
    // --json may not have been parsed yet when an earlier flag was refused: the command line says whether it was given.
    const json = opts.json === true || process.argv.includes("--json");
    process.exit(reportFailure(err, { json, url: opts.url ?? process.env.LICENSD_URL }));
  },
);
