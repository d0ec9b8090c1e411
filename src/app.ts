import type http from "node:http";
import { fastBrotli, fastGzip } from "./platform/compression.js";
import { every } from "./platform/worker.js";
import { createContextValues } from "@connectrpc/connect";
import { peerAddressKey } from "./platform/context.js";
import type { Config } from "./config.js";
import { leanStreams, routes, servedServices, licensdServices, publicReads, reflectedFiles } from "./connect.js";
import { listen, type RequestHandler, type RunningServer } from "./server.js";
import { createAuthInterceptor } from "./platform/auth.js";
import { systemClock, type Clock } from "./platform/clock.js";
import { openDatabase, type Database } from "./platform/db.js";
import { schema } from "./entities.js";
import { startEmbeddedDatabase, type EmbeddedDatabase } from "./platform/embedded-db.js";
import { createHealthRpc, HealthState, ServingStatus } from "./platform/health.js";
import { createIdempotency } from "./platform/idempotency.js";
import { DataKeyring } from "./platform/crypto.js";
import { type DataKeyMaterial, loadDataKeyMaterial } from "./platform/data-key-material.js";
import { PageTokens } from "./platform/pagination.js";
import { createLogger, type Logger } from "./platform/logger.js";
import { Metrics } from "./platform/metrics.js";
import { ReplicaSet } from "./platform/replicas.js";
import { migrate } from "./platform/migrate.js";
import { createEdgeHandler } from "./platform/edge.js";
import { createConsoleHandler, findConsoleDir } from "./platform/console-assets.js";
import { shuttingDown } from "./platform/errors.js";
import { createReflectionV1, createReflectionV1alpha, ReflectionIndex } from "./platform/reflection.js";
import { createTelemetryInterceptor, tracingConfigured } from "./platform/telemetry.js";
import type { Tracing, TracingOptions } from "./platform/tracing.js";
import { createValidationInterceptor } from "./platform/validation.js";
import { UsageEventSchema } from "../gen/ts/licensd/usage/v1/usage_pb.js";
import { createApiKeyService } from "./tenants/api-key.service.js";
import { createTenantRpc } from "./tenants/tenant.rpc.js";
import { createTenantService } from "./tenants/tenant.service.js";
import { createActivationRpc } from "./activation/activation.rpc.js";
import { createMachineService } from "./activation/machine.service.js";
import { createLicenseMachines } from "./activation/license-machines.js";
import { AuditFeed } from "./events/audit-feed.js";
import { createHeartbeatWorker, type HeartbeatWorker } from "./activation/heartbeat.worker.js";
import { LeaseHub } from "./activation/lease-hub.js";
import { createLeaseSessions } from "./activation/lease-session.js";
import { createProcessRpc } from "./activation/process.rpc.js";
import { createProcessService } from "./activation/process.service.js";
import { createRateLimiter } from "./platform/rate-limit.js";
import { createForeignKeyBudget, createKeyFailureLimit } from "./platform/key-failures.js";
import { createClientAddress } from "./platform/client-address.js";
import { createIngestService, type IngestService } from "./usage/ingest.service.js";
import { createMeterService } from "./usage/meter.service.js";
import { createUsageQueries } from "./usage/usage.query.js";
import { createUsageRpc } from "./usage/usage.rpc.js";
import { createAnomalyService } from "./usage/anomaly.service.js";
import { createUsageWorker, type UsageWorker } from "./usage/usage.worker.js";
import { createAuditRpc } from "./audit/audit.rpc.js";
import { createAuditService, type AuditService } from "./audit/audit.service.js";
import { AuditKeyring } from "./events/audit-keyring.js";
import { createEvents, type Events } from "./events/events.js";
import { AuditSequencer } from "./events/sequencer.js";
import { createEventLog } from "./events/event-log.js";
import { SigningKeyStore } from "./platform/signing-keys.js";
import { createCatalogRpc } from "./licensing/catalog.rpc.js";
import { createCatalogService } from "./licensing/catalog.service.js";
import { KeyCharacterPool, LicenseKeyring } from "./licensing/license-key.js";
import { createLicenseRpc } from "./licensing/license.rpc.js";
import { createLicenseUserRpc } from "./licensing/license-user.rpc.js";
import { createLicenseUserService } from "./licensing/license-user.service.js";
import { createLicenseService } from "./licensing/license.service.js";
import { createValidationService } from "./licensing/validation.service.js";
import { ValidationAnswers } from "./licensing/validation-answer.js";
import { createImportService } from "./licensing/import.service.js";
import { createLicenseWorker, type LicenseWorker } from "./licensing/license.worker.js";
import { createSafeSender, type ConnectFn, type ResolveFn } from "./platform/safe-http.js";
import { createDeliveryQueries } from "./webhooks/delivery.query.js";
import { createDispatcher, type Dispatcher } from "./webhooks/dispatcher.js";
import { createEndpointService } from "./webhooks/endpoint.service.js";
import { createWebhookRpc } from "./webhooks/webhook.rpc.js";
import { createProvisioningLicenses } from "./provisioning/licensing-port.js";
import { createEmailOutbox, type EmailOutbox, smtpTransport } from "./provisioning/email-outbox.js";
import { createPaymentHook } from "./provisioning/payment-hook.js";
import { createPaymentSourceService } from "./provisioning/payment-source.service.js";
import { createPaymentRpc } from "./provisioning/payment.rpc.js";
import { createProvisioningService } from "./provisioning/provisioning.service.js";
import packageJson from "../package.json" with { type: "json" };

export interface App {
  config: Config;
  logger: Logger;
  db: Database;
  databaseUrl: string;
  server: RunningServer;
  health: HealthState;
  audit: AuditService;
  /** Appends to the audit log (every service's mutations go through it). */
  events: Events;
  /** Sequences this process's queued audit entries, and sweeps what crashed instances left. */
  sequencer: AuditSequencer;
  licenseWorker: LicenseWorker;
  heartbeatWorker: HeartbeatWorker;
  usageWorker: UsageWorker;
  webhooks: Dispatcher;
  /** License-key e-mails after purchases (provisioning/). */
  outbox: EmailOutbox;
  ingest: IngestService;
  hub: LeaseHub;
  signingKeys: SigningKeyStore;
  /** The keys derived from the data key once and stored sealed (audit dk1, license-key HMAC v0, page tokens). */
  dataKeyMaterial: DataKeyMaterial;
  /** The license-key HMAC secrets in use: LICENSD_HMAC_KEYS, else version 0 from the data-key material. */
  licenseKeySecrets: Record<string, string>;
  /** OpenTelemetry, when on. */
  tracing: Tracing | undefined;
  /** Base URL clients use, e.g. http://127.0.0.1:8080. */
  url: string;
  /** Graceful: NOT_SERVING, stop accepting, drain calls and streams, close the pool, stop an embedded database. */
  close(): Promise<void>;
  /** What `close` is waiting for ("" before it was called). */
  closingStage(): string;
}

export interface AppOptions {
  logger?: Logger;
  clock?: Clock;
  /** Apply migrations at start (default true; cluster workers leave it to the primary). */
  migrate?: boolean;
  /** Tracing on, whatever OTEL_* says (tests pass an in-memory exporter); by default it follows OTEL_*. */
  tracing?: TracingOptions;
  /** For tests: where webhook hosts resolve and how their addresses are dialed (never off the loopback). */
  webhookNetwork?: { resolve?: ResolveFn; connect?: ConnectFn };
}

/**
 * Opens the database (embedded when no URL is configured), migrates it when asked. `sessionUrl` is where what needs
 * a session of its own goes (LISTEN): the direct URL when a pooler is in front (docs/pgbouncer.md).
 */
export async function openStorage(config: Config, logger: Logger, opts: { migrate: boolean }) {
  let embedded: EmbeddedDatabase | undefined;
  let url = config.databaseUrl;
  if (url === undefined) {
    embedded = await startEmbeddedDatabase(config.dataDir, logger);
    url = embedded.url;
  }
  const sessionUrl = config.databaseDirectUrl ?? url;
  let db: Database | undefined;
  try {
    const namedStatements = config.databasePooler !== "pgbouncer-transaction";
    db = await openDatabase(url, { poolMax: config.dbPoolMax, logger, schema, namedStatements });
    if (opts.migrate && sessionUrl === url) await migrate(db, url, logger);
    else if (opts.migrate) {
      // Migrations (MikroORM sets session settings) and their advisory lock run on a session of their own.
      const direct = await openDatabase(sessionUrl, { poolMax: 1, logger, schema });
      try {
        await migrate(direct, sessionUrl, logger);
      } finally {
        await direct.close();
      }
    }
    return { db, url, sessionUrl, embedded };
  } catch (err) {
    await db?.close().catch(() => undefined);
    await embedded?.stop();
    throw err;
  }
}

/** The composition root: every dependency of licensd is wired here, by hand. */
export async function createApp(config: Config, opts: AppOptions = {}): Promise<App> {
  const logger = opts.logger ?? createLogger(config.logLevel);
  const clock = opts.clock ?? systemClock;
  for (const warning of config.warnings) logger.warn(warning);
  const {
    db,
    url: databaseUrl,
    sessionUrl,
    embedded,
  } = await openStorage(config, logger, { migrate: opts.migrate ?? true });
  // Whatever is acquired from here on is released, in reverse, if start-up fails.
  const acquired: (() => unknown)[] = [() => embedded?.stop(), () => db.close()];
  let tracing: Tracing | undefined;
  try {
    if (opts.tracing || tracingConfigured(process.env)) {
      // Imported only when on: without OTEL_* settings the SDK is never loaded.
      tracing = await (await import("./platform/tracing.js")).startTracing(process.env, opts.tracing);
      acquired.push(() => tracing?.shutdown());
      logger.info("OpenTelemetry tracing on");
    }
    return await assemble();
  } catch (err) {
    for (const release of acquired.reverse()) await Promise.resolve(release()).catch(() => undefined);
    throw err;
  }

  async function assemble(): Promise<App> {
    // Lists, summaries and audit reads may be served by a replica within the staleness bound (docs/replicas.md).
    const reads = await ReplicaSet.open(db, config.databaseReplicaUrls, {
      maxLagMs: config.databaseReplicaMaxLagMs,
      poolMax: config.dbPoolMax,
      logger,
      schema,
    });
    acquired.push(() => reads.close());
    // The current data key seals; previous ones (a rotation under way) still open.
    const dataKeys = new DataKeyring(config.dataKey, config.previousDataKeys);
    const dataKeyMaterial = await loadDataKeyMaterial(db, dataKeys);
    const [dataKeyFingerprint, ...previousDataKeyFingerprints] = dataKeys.fingerprints();
    logger.info({ dataKeyFingerprint, previousDataKeyFingerprints }, "data keys (fingerprints)");
    const keyring = new AuditKeyring(dataKeyMaterial.auditHmacDk1, config.auditHmacKeys);
    const feed = new AuditFeed(sessionUrl, logger);
    acquired.push(() => feed.stop());
    await feed.start();
    // This process's caches drop what a change touched as soon as it commits, before its caller hears back.
    const sequencer = new AuditSequencer(db, keyring, { logger, sweepMs: config.auditSweepMs });
    acquired.push(() => sequencer.stop());
    const events = createEvents({
      clock,
      keyring,
      sequencer,
      afterCommit: (em, hook) => db.afterCommit(em, hook),
      sequenced: (tenantId) => feed.announce(tenantId),
    });
    sequencer.start();
    const signingKeys = new SigningKeyStore(db, dataKeys, clock, logger, feed);
    acquired.push(() => signingKeys.stop());
    await signingKeys.start();
    const tenants = createTenantService({ clock, events });
    const apiKeys = createApiKeyService({ db, clock, tenants, events });
    const audit = createAuditService({ db, clock, keyring, signingKeys, feed, events });
    const idempotency = createIdempotency(db, clock, dataKeys);
    const pages = new PageTokens(dataKeyMaterial.pageTokenKey);
    // Without LICENSD_HMAC_KEYS (set it to import Vinzy keys), version 0 is the data-key material's.
    const licenseKeySecrets = config.licenseKeySecrets ?? { "0": dataKeyMaterial.licenseKeyHmacV0 };
    const licenseKeyring = new LicenseKeyring(licenseKeySecrets, new KeyCharacterPool());
    const rateLimiter = createRateLimiter(db, clock);
    const keyFailures = createKeyFailureLimit({
      db,
      clock,
      rateLimiter,
      rule: config.keyFailureRatePerIp,
      notifications: feed,
      logger,
    });
    await keyFailures.start();
    const foreignKeys = createForeignKeyBudget({
      rateLimiter,
      keyFailures,
      rule: config.keyCollisionRatePerTenant,
      logger,
    });
    const catalog = createCatalogService({ clock, events });
    const machines = createMachineService({
      clock,
      events,
      catalog,
      keyring: licenseKeyring,
      signingKeys,
      dataKey: dataKeys,
    });
    const processes = createProcessService({ clock, events, machines });
    // Licensing asks about machines through its port; activation fills it.
    const licenseMachines = createLicenseMachines({ db, machines });
    const licenses = createLicenseService({
      clock,
      events,
      catalog,
      keyring: licenseKeyring,
      dataKey: dataKeys,
      signingKeys,
      licenseFileHmacSecret: config.licenseFileHmacSecret,
      foreignKeys,
      machines: licenseMachines,
    });
    const licenseUsers = createLicenseUserService({ clock, events, catalog, licenses });
    const validationAnswers = new ValidationAnswers(feed);
    const validation = createValidationService({
      db,
      clock,
      keyring: licenseKeyring,
      feed,
      machines: licenseMachines,
      events,
    });
    const imports = createImportService({ db, catalog, licenses, logger });
    const hub = new LeaseHub(createEventLog(db), feed, logger);
    const meters = createMeterService({ clock, events, catalog });
    const ingest = createIngestService({ db, clock, events, keyring: licenseKeyring, signingKeys, feed });
    const usageQueries = createUsageQueries({ clock, ingest });
    const anomalies = createAnomalyService({ db, clock, events });
    const usageWorker = createUsageWorker({ db, clock, logger, ingest, anomalies });
    acquired.push(() => usageWorker.stop());
    await usageWorker.start();
    const heartbeatWorker = createHeartbeatWorker({
      db,
      clock,
      events,
      logger,
      rateLimiter,
      intervalMs: config.heartbeatSweepMs,
    });
    acquired.push(() => heartbeatWorker.stop());
    heartbeatWorker.start();
    const licenseWorker = createLicenseWorker({ db, clock, events, logger });
    acquired.push(() => licenseWorker.stop());
    licenseWorker.start();

    const webhookEndpoints = createEndpointService({
      clock,
      events,
      dataKey: dataKeys,
      allowHttp: config.webhooks.allowHttp,
      allowPrivate: config.webhooks.allowPrivate,
      allowedHosts: config.webhooks.allowedHosts,
    });
    // Provisioning from payments: providers' events → customers and licenses, through the licensing services.
    const provisioningLicenses = createProvisioningLicenses({ catalog, licenses });
    const paymentSources = createPaymentSourceService({
      clock,
      events,
      dataKey: dataKeys,
      policies: provisioningLicenses,
    });
    const { smtp } = config;
    const outbox = createEmailOutbox({
      db,
      clock,
      events,
      dataKey: dataKeys,
      logger,
      transport: smtp.host ? smtpTransport({ ...smtp, host: smtp.host }) : undefined,
      from: smtp.from,
      pollMs: smtp.pollMs,
    });
    acquired.push(() => outbox.stop());
    outbox.start();
    const provisioning = createProvisioningService({
      db,
      clock,
      events,
      sources: paymentSources,
      licenses: provisioningLicenses,
      outbox,
    });
    const health = new HealthState(licensdServices.map((s) => s.typeName));
    acquired.push(() => health.stop());
    await health.monitor(() => db.ping(), logger);
    const pool = await db.orm.driver.getConnection().getNativeClient();
    const metrics = new Metrics(() => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }));
    metrics.observeReplicas(reads);
    const webhooks = createDispatcher({
      db,
      clock,
      logger,
      log: createEventLog(db),
      feed,
      events,
      dataKey: dataKeys,
      sender: createSafeSender({
        allowPrivate: config.webhooks.allowPrivate,
        allowHttp: config.webhooks.allowHttp,
        allowedHosts: config.webhooks.allowedHosts,
        timeoutMs: 15_000,
        maxResponseBytes: 1024,
        userAgent: `licensd/${packageJson.version}`,
        ...opts.webhookNetwork,
      }),
      metrics,
      pollMs: config.webhooks.pollMs,
      historyDays: config.webhooks.historyDays,
      leaseMs: config.webhooks.leaseMs,
    });

    if (config.webhooks.dispatcher) {
      acquired.push(() => webhooks.stop());
      await webhooks.start();
    }
    const reflection = new ReflectionIndex(servedServices, reflectedFiles);
    const shutdown = new AbortController();
    const clientAddress = createClientAddress(config.trustedProxies, config.forwardedHeader);

    const leases = createLeaseSessions({ db, clock, machines, processes, hub, keyFailures, logger });
    const readMaxBytes = 4 * 1024 * 1024;
    const activation = {
      ...createActivationRpc({
        db,
        reads,
        idempotency,
        signingKeys,
        machines,
        leases,
        rateLimiter,
        rates: { perLicense: config.activationRatePerLicense, perIp: config.activationRatePerIp },
        pages,
        keyFailures,
      }),
      ...createProcessRpc({ db, reads, clock, idempotency, processes, pages, keyFailures }),
    };
    const connectHandler = createEdgeHandler({
      routes: routes({
        tenant: createTenantRpc({ db, reads, idempotency, tenants, apiKeys, pages }),
        activation,
        licensing: {
          ...createCatalogRpc({ db, reads, idempotency, catalog, pages }),
          ...createLicenseUserRpc({ db, idempotency, users: licenseUsers, pages }),
          ...createLicenseRpc({
            db,
            reads,
            clock,
            idempotency,
            licenses,
            validation,
            signingKeys,
            imports,
            machines: licenseMachines,
            pages,
            keyFailures,
            answers: validationAnswers,
          }),
        },
        usage: createUsageRpc({
          db,
          reads,
          idempotency,
          meters,
          ingest,
          queries: usageQueries,
          anomalies,
          pages,
          keyFailures,
        }),
        webhook: {
          ...createWebhookRpc({
            db,
            reads,
            idempotency,
            endpoints: webhookEndpoints,
            deliveries: createDeliveryQueries(),
            dispatcher: webhooks,
            pages,
          }),
          ...createPaymentRpc({ db, reads, idempotency, sources: paymentSources, provisioning, outbox, pages }),
        },
        audit: createAuditRpc({
          db,
          reads,
          clock,
          idempotency,
          audit,
          keepAliveMs: config.auditKeepAliveMs,
          pages,
          settle: (tenantId) => sequencer.settle(tenantId).catch(() => undefined),
        }),
        health: createHealthRpc(health),
        reflectionV1: createReflectionV1(reflection),
        reflectionV1alpha: createReflectionV1alpha(reflection),
      }),
      interceptors: [
        createTelemetryInterceptor(logger, metrics, tracing?.tracer),
        createAuthInterceptor(config.superAdminKey, (secret) => apiKeys.resolve(secret), keyFailures),
        // Usage events are checked one by one by the ingest: a bad one is a Rejection, its batch lands.
        createValidationInterceptor({ checkedByService: new Set([UsageEventSchema.typeName]) }),
      ],
      // Fast levels for answers compressed once each (see compression.ts), in connect-node's order.
      acceptCompression: [fastGzip, fastBrotli],
      shutdownSignal: shutdown.signal,
      contextValues: (req) => createContextValues().set(peerAddressKey, clientAddress(req)),
      readMaxBytes,
      // With tracing on, every stream takes connect-es's path, where the telemetry interceptor gives it its span.
      leanStreams: tracing
        ? []
        : leanStreams(leases, {
            readMaxBytes,
            shutdownSignal: shutdown.signal,
            address: clientAddress,
            logger,
            metrics,
          }),
      publicReads,
      logger,
      metrics,
      tracer: tracing?.tracer,
    });

    const consoleAssets = createConsoleHandler(findConsoleDir());
    // Providers' events are small (Stripe's are at most a few hundred KiB with expanded objects).
    const paymentHook = createPaymentHook({ provisioning, logger, maxBytes: 1024 * 1024 });
    const handler: RequestHandler = (req, anyRes) => {
      const res = anyRes as http.ServerResponse; // both response kinds share writeHead/end
      const path = req.url?.split("?")[0];
      if (path !== undefined && consoleAssets(req as http.IncomingMessage, res, path)) return;
      if (path !== undefined && paymentHook(req as http.IncomingMessage, res, path)) return;
      if (req.method === "GET" && path === "/healthz") {
        const up = health.get("") === ServingStatus.SERVING;
        res.writeHead(up ? 200 : 503, { "content-type": "text/plain" });
        res.end(up ? "ok\n" : "unavailable\n");
        return;
      }
      if (req.method === "GET" && path === "/metrics") {
        metrics.registry.metrics().then(
          (text) => {
            res.writeHead(200, { "content-type": metrics.registry.contentType });
            res.end(text);
          },
          (err: unknown) => {
            logger.error({ err }, "metrics failed");
            res.writeHead(500);
            res.end();
          },
        );
        return;
      }
      connectHandler(req as never, anyRes as never);
    };

    const purge = every(10 * 60_000, () => idempotency.purge(), { name: "idempotency purge", logger });
    acquired.push(() => purge.stop());
    const server = await listen(handler, {
      host: config.host,
      port: config.port,
      tls: config.tlsCert && config.tlsKey ? { cert: config.tlsCert, key: config.tlsKey } : undefined,
      logger,
    });
    const scheme = config.tlsCert ? "https" : "http";
    const shownHost = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
    const url = `${scheme}://${shownHost.includes(":") ? `[${shownHost}]` : shownHost}:${server.port}`;
    logger.info({ url, embeddedDatabase: embedded !== undefined, env: config.env }, "licensd listening");

    let closing: Promise<void> | undefined;
    let closingStage = "";
    return {
      config,
      logger,
      db,
      databaseUrl,
      server,
      health,
      audit,
      events,
      sequencer,
      licenseWorker,
      heartbeatWorker,
      usageWorker,
      webhooks,
      outbox,
      ingest,
      hub,
      signingKeys,
      dataKeyMaterial,
      licenseKeySecrets,
      tracing,
      url,
      close() {
        closing ??= (async () => {
          // A postmaster that stops from here on (Ctrl-C reaches its process group too) is not restarted.
          embedded?.endSupervision();
          // No pass starts from here on; the pool closes only once the running ones have ended.
          const loops = [purge, licenseWorker, heartbeatWorker, usageWorker, webhooks, health];
          const passesEnded = Promise.all(loops.map((loop) => loop.stop()));
          // Health is NOT_SERVING from here on; calls are still taken until balancers have seen it.
          closingStage = "not serving, still answering (LICENSD_SHUTDOWN_DELAY_MS)";
          if (config.shutdownDelayMs > 0) await new Promise((r) => setTimeout(r, config.shutdownDelayMs));
          closingStage = "draining calls and streams";
          await server.close(config.shutdownTimeoutMs, () => shutdown.abort(shuttingDown()));
          const reloadEnded = signingKeys.stop();
          closingStage = "waiting for background passes";
          await Promise.all([passesEnded, reloadEnded]);
          closingStage = "sequencing the last audit entries";
          await sequencer.stop();
          closingStage = "closing the audit feed";
          await feed.stop();
          closingStage = "closing the database pool";
          await reads.close();
          await db.close();
          closingStage = "stopping the embedded PostgreSQL";
          await embedded?.stop();
          closingStage = "exporting the last spans";
          await tracing?.shutdown();
          closingStage = "stopped";
          logger.info("licensd stopped");
        })();
        return closing;
      },
      closingStage: () => closingStage,
    };
  }
}
