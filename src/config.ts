import { createRequire } from "node:module";
import type { ZxcvbnFactory } from "@zxcvbn-ts/core";
import { existsSync } from "node:fs";
import path from "node:path";
import { compileTrustedProxies, type ForwardedHeader } from "./platform/client-address.js";
import { PostgresTarget } from "./platform/postgres-target.js";
import { loadDevSecrets, openDevSecrets } from "./platform/dev-secrets.js";
import type { RateRule } from "./platform/rate-limit.js";

/** Every setting licensd reads, validated once at start. */
export interface Config {
  env: "development" | "production";
  host: string;
  port: number;
  /** PostgreSQL URL; undefined means "start the embedded PostgreSQL in dataDir/pg". */
  databaseUrl: string | undefined;
  /**
   * A direct (session-capable) PostgreSQL URL for what needs one connection of its own: LISTEN, and migrations
   * under their advisory lock (LICENSD_DATABASE_DIRECT_URL); undefined means databaseUrl serves for both.
   */
  databaseDirectUrl: string | undefined;
  /** What sits between licensd and PostgreSQL on databaseUrl (LICENSD_DATABASE_POOLER). */
  databasePooler: DatabasePooler;
  /**
   * Streaming replicas for reads that tolerate bounded staleness (LICENSD_DATABASE_REPLICA_URL, docs/replicas.md);
   * empty: every read goes to databaseUrl.
   */
  databaseReplicaUrls: string[];
  /** A replica serves reads only while it lags the primary by less than this (LICENSD_DATABASE_REPLICA_MAX_LAG_MS). */
  databaseReplicaMaxLagMs: number;
  dataDir: string;
  superAdminKey: string;
  /** 32 bytes for AES-256-GCM encryption of stored secrets: the key that seals. */
  dataKey: Buffer;
  /** Older data keys that only open, during a rotation (LICENSD_DATA_KEY_PREVIOUS; docs/operations.md). */
  previousDataKeys: Buffer[];
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  logLevel: string;
  dbPoolMax: number;
  shutdownTimeoutMs: number;
  /**
   * After SIGTERM: how long to go on accepting and answering calls while health reports NOT_SERVING, so a balancer
   * that follows health checks takes the instance out before its port closes.
   */
  shutdownDelayMs: number;
  workers: number;
  /** Extra audit HMAC keys by kid (LICENSD_AUDIT_HMAC_KEYS); the last one signs. */
  auditHmacKeys: Record<string, Buffer>;
  /**
   * License key HMAC secrets by version 0–31 (LICENSD_HMAC_KEYS, Vinzy's format); the highest signs. Unset: version 0
   * is the data-key material stored in the database (platform/data-key-material.ts).
   */
  licenseKeySecrets: Record<string, string> | undefined;
  /** Shared secret for HMAC (`licensd1h.`) license files; unset disables them. */
  licenseFileHmacSecret: string | undefined;
  /** How often an idle audit tail gets a keep-alive. */
  auditKeepAliveMs: number;
  /** How often queued audit entries are swept into the log (LICENSD_AUDIT_SWEEP_MS; left only by a crash). */
  auditSweepMs: number;
  /** Activation attempts allowed per license (token bucket: burst, refilled evenly over the period); null disables. */
  activationRatePerLicense: RateRule | null;
  /** Activation attempts allowed per client IP address; null disables. */
  activationRatePerIp: RateRule | null;
  /** Failed key lookups allowed per client address on every key-credential RPC; null disables. */
  keyFailureRatePerIp: RateRule | null;
  /** CreateLicense/import custom keys refused because another tenant holds them, per tenant; null disables. */
  keyCollisionRatePerTenant: RateRule | null;
  /** Proxies (CIDRs) whose forwarding header names the client; empty: the TCP peer is the client. */
  trustedProxies: string[];
  /** The header trusted proxies write the client address in. */
  forwardedHeader: ForwardedHeader;
  /** How often the heartbeat worker looks for dead machines. */
  heartbeatSweepMs: number;
  /** Webhook deliveries: SSRF rules, whether this instance sends, how long history is kept. */
  webhooks: WebhookSettings;
  /** License keys e-mailed after a purchase (provisioning/): the SMTP server, and the outbox's pace. */
  smtp: SmtpSettings;
  /** Settings that were accepted but deserve a word in the log at start. */
  warnings: string[];
  /** Secrets that development mode generated (and stored) on this start, to announce. */
  generated: string[];
  /** The development secrets file, when some secret was read from (or written to) it. */
  devSecretsFile: string | undefined;
}

export type { RateRule };

/**
 * `none`: databaseUrl reaches PostgreSQL (or a pooler in session mode). `pgbouncer-transaction`: a PgBouncer in
 * transaction pooling mode, where a connection is lent for one transaction only: no named prepared statements,
 * and LISTEN and session advisory locks go to databaseDirectUrl.
 */
export type DatabasePooler = "none" | "pgbouncer-transaction";
const DATABASE_POOLERS: readonly DatabasePooler[] = ["none", "pgbouncer-transaction"];

export interface WebhookSettings {
  /** Loopback, private and link-local destinations allowed (LICENSD_WEBHOOK_ALLOW_PRIVATE). */
  allowPrivate: boolean;
  /** http:// endpoint URLs allowed: development only. */
  allowHttp: boolean;
  /** When not empty, the only hosts endpoints may name (LICENSD_WEBHOOK_ALLOWED_HOSTS). */
  allowedHosts: string[];
  /** Whether this instance runs the dispatcher (LICENSD_WEBHOOK_DISPATCHER, default true). */
  dispatcher: boolean;
  /** Finished deliveries older than this many days are pruned (LICENSD_WEBHOOK_HISTORY_DAYS). */
  historyDays: number;
  /** How often the dispatcher looks for due work when no notification woke it. */
  pollMs: number;
  /** How long a claimed delivery stays claimed: past it, an attempt never recorded (a crash) is made again. */
  leaseMs: number;
}

export interface SmtpSettings {
  /** LICENSD_SMTP_HOST; undefined: nothing is sent, and queued e-mails wait until one is configured. */
  host: string | undefined;
  /** LICENSD_SMTP_PORT: default 465 with implicit TLS, else 587. */
  port: number;
  /** LICENSD_SMTP_TLS: `starttls` (default: required), `implicit` (TLS from the first byte) or `none`. */
  tls: "starttls" | "implicit" | "none";
  user: string | undefined;
  password: string | undefined;
  /** LICENSD_SMTP_FROM: the From of every e-mail, e.g. `Acme Licensing <licenses@acme.example>`. */
  from: string;
  /** How often the outbox looks for due e-mails (LICENSD_EMAIL_POLL_MS). */
  pollMs: number;
}

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600 };

/** Parses `<count>/<period>` such as `60/1m`, `10/30s`, `1000/1h`; `0` or `off` disables. */
export function parseRate(text: string): RateRule | null | undefined {
  if (text === "0" || text === "off") return null;
  const m = /^(\d{1,9})\/(\d{1,6})([smh])$/.exec(text);
  if (!m) return undefined;
  const capacity = Number(m[1]);
  const periodSeconds = Number(m[2]) * UNIT_SECONDS[m[3]!]!;
  return capacity > 0 && periodSeconds > 0 ? { capacity, periodSeconds } : undefined;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

type Env = Record<string, string | undefined>;

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** The environment being read: each step records what is wrong in `problems` and goes on, to report all at once. */
interface Settings {
  /** The variable's value; unset and empty are the same. */
  str(name: string): string | undefined;
  /** A whole number in [min, max], else `def` (and a problem when it was set). */
  int(name: string, def: number, min: number, max: number): number;
  /** A rate rule (`parseRate`), `def` when unset; null (disabled) after a problem. */
  rate(name: string, def: string): RateRule | null;
  problems: string[];
  warnings: string[];
}

/**
 * Reads LICENSD_* variables. Production refuses insecure defaults; development
 * generates missing secrets once and keeps them in the data dir so restarts agree.
 * The steps run in this order, so the problems are reported in it.
 */
export function loadConfig(env: Env = process.env): Config {
  const settings = readSettings(env);
  const production = readMode(settings);
  const server = readServer(settings, production);
  const secrets = readSecrets(settings, production, server);
  const keys = readSigningKeys(settings);
  const limits = readLimits(settings);
  const proxies = readProxies(settings);
  const tuning = readTuning(settings);
  const webhooks = readWebhooks(settings, production);
  const smtp = readSmtp(settings, production);

  if (settings.problems.length > 0) throw new ConfigError(settings.problems);
  const { dataKey } = secrets;
  return {
    env: production ? "production" : "development",
    ...server,
    superAdminKey: secrets.superAdminKey!,
    dataKey: dataKey!,
    previousDataKeys: secrets.previousDataKeys,
    ...tuning,
    auditHmacKeys: keys.auditHmacKeys,
    licenseKeySecrets: keys.licenseKeySecrets,
    licenseFileHmacSecret: keys.licenseFileHmacSecret,
    ...limits,
    ...proxies,
    webhooks,
    smtp,
    generated: secrets.generated,
    devSecretsFile: secrets.devSecretsFile,
    warnings: settings.warnings,
  };
}

function readSettings(env: Env): Settings {
  const problems: string[] = [];
  const str = (name: string) => {
    const v = env[name];
    return v === undefined || v === "" ? undefined : v;
  };
  const int = (name: string, def: number, min: number, max: number) => {
    const raw = str(name);
    if (raw === undefined) return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name}=${JSON.stringify(raw)}: must be a whole number from ${min} to ${max}`);
      return def;
    }
    return n;
  };
  const rate = (name: string, def: string) => {
    const raw = str(name) ?? def;
    const rule = parseRate(raw);
    if (rule === undefined)
      problems.push(`${name}=${JSON.stringify(raw)}: must be <count>/<period> like 60/1m or 10/30s, or 0 to disable`);
    return rule ?? null;
  };
  return { str, int, rate, problems, warnings: [] };
}

/** LICENSD_ENV (or NODE_ENV): whether this is production. */
function readMode({ str, problems, warnings }: Settings): boolean {
  // NODE_ENV=production alone means production: a deployment that says so must not get generated secrets and an
  // embedded database.
  const nodeProduction = str("NODE_ENV") === "production";
  const envName = str("LICENSD_ENV") ?? (nodeProduction ? "production" : "development");
  if (envName !== "development" && envName !== "production") {
    problems.push(`LICENSD_ENV=${JSON.stringify(envName)}: must be "development" or "production"`);
  } else if (envName === "development" && nodeProduction) {
    warnings.push(
      "NODE_ENV=production, but LICENSD_ENV=development: running in development mode (generated secrets, embedded " +
        "PostgreSQL) because LICENSD_ENV says so",
    );
  }
  return envName === "production";
}

/** Where licensd listens and keeps its data: address, database, data dir, log level, TLS. */
function readServer({ str, int, problems }: Settings, production: boolean) {
  const port = int("LICENSD_PORT", 8080, 0, 65535);
  const host = str("LICENSD_HOST") ?? (production ? "0.0.0.0" : "127.0.0.1");
  const databaseUrl = str("LICENSD_DATABASE_URL");
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    problems.push("LICENSD_DATABASE_URL: must be a postgres:// or postgresql:// URL");
  }
  const { databaseDirectUrl, databasePooler } = readPooling({ str, problems }, databaseUrl);
  const { databaseReplicaUrls, databaseReplicaMaxLagMs } = readReplicas({ str, int, problems }, databaseUrl);
  const dataDir = path.resolve(str("LICENSD_DATA_DIR") ?? ".licensd");
  const logLevel = str("LICENSD_LOG_LEVEL") ?? "info";
  if (!LOG_LEVELS.includes(logLevel)) {
    problems.push(`LICENSD_LOG_LEVEL=${JSON.stringify(logLevel)}: must be one of ${LOG_LEVELS.join(", ")}`);
  }
  const tlsCert = str("LICENSD_TLS_CERT");
  const tlsKey = str("LICENSD_TLS_KEY");
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    problems.push("LICENSD_TLS_CERT and LICENSD_TLS_KEY: set both or neither");
  }
  for (const [name, file] of [
    ["LICENSD_TLS_CERT", tlsCert],
    ["LICENSD_TLS_KEY", tlsKey],
  ] as const) {
    if (file !== undefined && !existsSync(file)) problems.push(`${name}: no file at ${file}`);
  }
  return {
    host,
    port,
    databaseUrl,
    databaseDirectUrl,
    databasePooler,
    databaseReplicaUrls,
    databaseReplicaMaxLagMs,
    dataDir,
    tlsCert,
    tlsKey,
    logLevel,
  };
}

/** The default staleness bound of replica reads: 5 s. */
export const DEFAULT_REPLICA_MAX_LAG_MS = 5_000;

/**
 * The URLs of LICENSD_DATABASE_REPLICA_URL: separated by whitespace, or by a comma followed by the next URL's scheme
 * (a comma inside one URL is libpq's multi-host list: `postgres://u@h1:5432,h2:5432/db`).
 */
export function splitReplicaUrls(text: string): string[] {
  return text
    .split(/\s+|,(?=\s*postgres(?:ql)?:\/\/)/)
    .map((u) => u.trim())
    .filter((u) => u !== "");
}

/**
 * LICENSD_DATABASE_REPLICA_URL and LICENSD_DATABASE_REPLICA_MAX_LAG_MS (docs/replicas.md): each URL is checked as the
 * primary's is (and parsed as its connections will be); a replica is read-only, so `target_session_attrs` asking for
 * a writable host could never connect to one.
 */
function readReplicas(
  { str, int, problems }: Pick<Settings, "str" | "int" | "problems">,
  databaseUrl: string | undefined,
) {
  const raw = str("LICENSD_DATABASE_REPLICA_URL");
  const urls = raw === undefined ? [] : splitReplicaUrls(raw);
  const maxLagMs = int("LICENSD_DATABASE_REPLICA_MAX_LAG_MS", DEFAULT_REPLICA_MAX_LAG_MS, 500, 3_600_000);
  if (urls.length > 0 && databaseUrl === undefined)
    problems.push(
      "LICENSD_DATABASE_REPLICA_URL: needs LICENSD_DATABASE_URL too (replicas stream from a primary you run; the " +
        "embedded PostgreSQL has none)",
    );
  urls.forEach((url, i) => {
    const which =
      urls.length > 1
        ? `LICENSD_DATABASE_REPLICA_URL (URL ${i + 1} of ${urls.length})`
        : "LICENSD_DATABASE_REPLICA_URL";
    if (!/^postgres(ql)?:\/\//.test(url)) {
      problems.push(
        `${which}: must be a postgres:// or postgresql:// URL (several: separate them with commas or spaces)`,
      );
      return;
    }
    let target: PostgresTarget;
    try {
      target = PostgresTarget.parse(url);
    } catch (err) {
      problems.push(`${which}: ${(err as Error).message}`);
      return;
    }
    if (target.sessionAttrs !== "any")
      problems.push(`${which}: target_session_attrs=${target.sessionAttrs} asks for a writable host; a replica is not`);
    if (url === databaseUrl) problems.push(`${which}: is LICENSD_DATABASE_URL itself, not a replica of it`);
  });
  if (new Set(urls).size !== urls.length) problems.push("LICENSD_DATABASE_REPLICA_URL: names a URL twice");
  return { databaseReplicaUrls: urls, databaseReplicaMaxLagMs: maxLagMs };
}

/**
 * LICENSD_DATABASE_POOLER and LICENSD_DATABASE_DIRECT_URL (docs/pgbouncer.md). Behind a transaction-pooling
 * PgBouncer, LISTEN (audit tails, lease pushes, cache invalidation) and the migrations' advisory lock would land
 * on whatever server connection the pooler lends: they need the direct URL, so start is refused without it.
 */
function readPooling({ str, problems }: Pick<Settings, "str" | "problems">, databaseUrl: string | undefined) {
  const databaseDirectUrl = str("LICENSD_DATABASE_DIRECT_URL");
  if (databaseDirectUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseDirectUrl)) {
    problems.push("LICENSD_DATABASE_DIRECT_URL: must be a postgres:// or postgresql:// URL");
  }
  if (databaseDirectUrl !== undefined && databaseUrl === undefined) {
    problems.push(
      "LICENSD_DATABASE_DIRECT_URL: needs LICENSD_DATABASE_URL too (the embedded PostgreSQL has no pooler)",
    );
  }
  const pooler = str("LICENSD_DATABASE_POOLER") ?? "none";
  if (!DATABASE_POOLERS.includes(pooler as DatabasePooler)) {
    problems.push(`LICENSD_DATABASE_POOLER=${JSON.stringify(pooler)}: must be one of ${DATABASE_POOLERS.join(", ")}`);
  } else if (pooler === "pgbouncer-transaction") {
    if (databaseUrl === undefined)
      problems.push("LICENSD_DATABASE_POOLER=pgbouncer-transaction: needs LICENSD_DATABASE_URL, the PgBouncer's URL");
    if (databaseDirectUrl === undefined)
      problems.push(
        "LICENSD_DATABASE_DIRECT_URL: required with LICENSD_DATABASE_POOLER=pgbouncer-transaction — LISTEN/NOTIFY " +
          "(audit tails, lease pushes, cache invalidation) and the migration lock need a session, which transaction " +
          "pooling does not keep; set it to a URL that reaches PostgreSQL directly (or a session-mode pool)",
      );
  }
  return {
    databaseDirectUrl,
    databasePooler: DATABASE_POOLERS.includes(pooler as DatabasePooler) ? (pooler as DatabasePooler) : "none",
  };
}

/**
 * The super-admin key and the data key: checked in production, where they (and a database
 * URL) are required; in development, whichever is missing comes from the secrets file.
 */
function readSecrets(settings: Settings, production: boolean, server: { databaseUrl?: string; dataDir: string }) {
  const { str, problems } = settings;
  let superAdminKey = str("LICENSD_SUPER_ADMIN_KEY");
  let dataKeyText = str("LICENSD_DATA_KEY");
  const generated: string[] = [];
  let devSecretsFile: string | undefined;
  if (superAdminKey !== undefined && production) {
    const why = weakSecret(superAdminKey);
    if (why) problems.push(`LICENSD_SUPER_ADMIN_KEY: ${why}`);
  }
  let dataKey: Buffer | undefined;
  if (dataKeyText !== undefined) {
    dataKey = decodeKey(dataKeyText);
    if (!dataKey) problems.push("LICENSD_DATA_KEY: must be 32 bytes, as 64 hex characters or base64");
  }

  if (production) {
    requireProductionSettings(settings, { databaseUrl: server.databaseUrl, superAdminKey, dataKeyText });
  } else if (problems.length === 0 && (superAdminKey === undefined || dataKeyText === undefined)) {
    const { secrets: stored, created } = openDevSecrets(server.dataDir);
    devSecretsFile = path.join(server.dataDir, "secrets.json");
    if (superAdminKey === undefined) {
      superAdminKey = stored.superAdminKey;
      if (created) generated.push("LICENSD_SUPER_ADMIN_KEY");
    }
    if (dataKeyText === undefined) {
      dataKeyText = stored.dataKey;
      dataKey = decodeKey(dataKeyText);
      if (created) generated.push("LICENSD_DATA_KEY");
    }
  }
  const previousDataKeys = readPreviousDataKeys(settings, dataKey);
  return { superAdminKey, dataKey, previousDataKeys, generated, devSecretsFile };
}

/** LICENSD_DATA_KEY_PREVIOUS: comma-separated keys that open but never seal, none of them the current one. */
function readPreviousDataKeys({ str, problems }: Settings, dataKey: Buffer | undefined): Buffer[] {
  const keys: Buffer[] = [];
  const entries = (str("LICENSD_DATA_KEY_PREVIOUS") ?? "").split(",").map((e) => e.trim());
  if (entries.length === 1 && entries[0] === "") return keys;
  entries.forEach((text, i) => {
    const key = decodeKey(text);
    const which = `LICENSD_DATA_KEY_PREVIOUS: key ${i + 1} of ${entries.length}`;
    if (!key) problems.push(`${which} must be 32 bytes, as 64 hex characters or base64 (keys separated by commas)`);
    else if (dataKey?.equals(key))
      problems.push(`${which} is LICENSD_DATA_KEY itself: list only the keys that no longer seal`);
    else if (keys.some((k) => k.equals(key))) problems.push(`${which} is listed twice`);
    else keys.push(key);
  });
  return keys;
}

/** Production never falls back to the embedded database or generated secrets. */
function requireProductionSettings(
  { problems }: Settings,
  set: { databaseUrl?: string; superAdminKey?: string; dataKeyText?: string },
) {
  if (set.databaseUrl === undefined)
    problems.push("LICENSD_DATABASE_URL: required in production (the embedded PostgreSQL is for development)");
  if (set.superAdminKey === undefined)
    problems.push(
      "LICENSD_SUPER_ADMIN_KEY: required in production (at least 32 random bytes, e.g. `openssl rand -base64 32`)",
    );
  if (set.dataKeyText === undefined)
    problems.push("LICENSD_DATA_KEY: required in production (32 random bytes, e.g. `openssl rand -base64 32`)");
}

/** The audit log's extra HMAC keys, the license-key HMAC keyring and the license-file HMAC secret. */
function readSigningKeys({ str, problems }: Settings) {
  const auditHmacKeys: Record<string, Buffer> = {};
  const auditEntries = jsonEntries(str("LICENSD_AUDIT_HMAC_KEYS"));
  if (auditEntries === null) {
    problems.push('LICENSD_AUDIT_HMAC_KEYS: must be a JSON object {"kid": "<32 bytes, base64 or hex>", …}');
  } else {
    for (const [kid, value] of auditEntries) {
      const key = typeof value === "string" ? decodeKey(value) : undefined;
      if (!/^[A-Za-z0-9._-]{1,32}$/.test(kid) || kid === "dk1" || !key)
        problems.push(
          `LICENSD_AUDIT_HMAC_KEYS: entry ${JSON.stringify(kid)} ` +
            "needs a kid of [A-Za-z0-9._-] (not dk1) and a 32-byte key",
        );
      else auditHmacKeys[kid] = key;
    }
  }

  let licenseKeySecrets: Record<string, string> | undefined;
  const hmacEntries = jsonEntries(str("LICENSD_HMAC_KEYS"));
  const hmacOk = (entries: [string, unknown][]) =>
    entries.every(
      ([v, secret]) => /^([0-9]|[12][0-9]|3[01])$/.test(v) && typeof secret === "string" && secret.length >= 16,
    );
  if (hmacEntries === null || !hmacOk(hmacEntries))
    problems.push('LICENSD_HMAC_KEYS: must be a JSON object {"<version 0-31>": "<secret, 16+ characters>", …}');
  else if (hmacEntries.length > 0) licenseKeySecrets = Object.fromEntries(hmacEntries) as Record<string, string>;

  const licenseFileHmacSecret = str("LICENSD_LICENSE_FILE_HMAC_SECRET");
  if (licenseFileHmacSecret !== undefined && licenseFileHmacSecret.length < 32)
    problems.push("LICENSD_LICENSE_FILE_HMAC_SECRET: must be at least 32 characters");
  return { auditHmacKeys, licenseKeySecrets, licenseFileHmacSecret };
}

/** The rate limits (token buckets). */
function readLimits({ rate }: Settings) {
  return {
    activationRatePerLicense: rate("LICENSD_ACTIVATION_RATE_PER_LICENSE", "100/1m"),
    activationRatePerIp: rate("LICENSD_ACTIVATION_RATE_PER_IP", "300/1m"),
    keyFailureRatePerIp: rate("LICENSD_KEY_FAILURE_RATE_PER_IP", "60/1m"),
    keyCollisionRatePerTenant: rate("LICENSD_KEY_COLLISION_RATE_PER_TENANT", "30/1h"),
  };
}

/** Which proxies' forwarding header names the client, and which header that is. */
function readProxies({ str, problems }: Settings) {
  const trustedProxies = (str("LICENSD_TRUSTED_PROXIES") ?? "")
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e !== "");
  const trust = compileTrustedProxies(trustedProxies);
  if ("bad" in trust)
    problems.push(
      "LICENSD_TRUSTED_PROXIES: not an IPv4/IPv6 address or CIDR: " +
        `${trust.bad.map((b) => JSON.stringify(b)).join(", ")}`,
    );
  const forwardedHeader = (str("LICENSD_FORWARDED_HEADER") ?? "x-forwarded-for").toLowerCase();
  if (forwardedHeader !== "x-forwarded-for" && forwardedHeader !== "forwarded") {
    problems.push(
      `LICENSD_FORWARDED_HEADER=${JSON.stringify(forwardedHeader)}: must be "x-forwarded-for" or "forwarded"`,
    );
  }
  return { trustedProxies, forwardedHeader: forwardedHeader as ForwardedHeader };
}

/**
 * Pool size, shutdown, processes and intervals; read before the check for problems, so a bad
 * value is named rather than replaced by its default.
 */
function readTuning({ int }: Settings) {
  return {
    dbPoolMax: int("LICENSD_DB_POOL_MAX", 10, 1, 1000),
    shutdownTimeoutMs: int("LICENSD_SHUTDOWN_TIMEOUT_MS", 10_000, 0, 600_000),
    shutdownDelayMs: int("LICENSD_SHUTDOWN_DELAY_MS", 0, 0, 600_000),
    workers: int("LICENSD_WORKERS", 1, 1, 256),
    auditKeepAliveMs: int("LICENSD_AUDIT_KEEPALIVE_MS", 15_000, 100, 600_000),
    auditSweepMs: int("LICENSD_AUDIT_SWEEP_MS", 2_000, 50, 600_000),
    heartbeatSweepMs: int("LICENSD_HEARTBEAT_SWEEP_MS", 30_000, 100, 3_600_000),
  };
}

/** LICENSD_WEBHOOK_*: the outbound deliveries. */
function readWebhooks({ str, int, problems, warnings }: Settings, production: boolean): WebhookSettings {
  const flag = (name: string, def: boolean) => {
    const raw = str(name);
    if (raw === undefined) return def;
    if (raw === "true" || raw === "1") return true;
    if (raw === "false" || raw === "0") return false;
    problems.push(`${name}=${JSON.stringify(raw)}: must be true or false`);
    return def;
  };
  const allowPrivate = flag("LICENSD_WEBHOOK_ALLOW_PRIVATE", false);
  if (allowPrivate && production)
    warnings.push(
      "LICENSD_WEBHOOK_ALLOW_PRIVATE=true: webhook endpoints may point at loopback, private and link-local " +
        "addresses (cloud metadata services included); keep it off unless every tenant is trusted",
    );
  const allowedHosts = (str("LICENSD_WEBHOOK_ALLOWED_HOSTS") ?? "")
    .split(",")
    .map((h) => h.trim())
    .filter((h) => h !== "");
  const badHost = allowedHosts.find((h) => !/^(\*\.)?[A-Za-z0-9.:-]+$/.test(h));
  if (badHost !== undefined)
    problems.push(
      `LICENSD_WEBHOOK_ALLOWED_HOSTS: ${JSON.stringify(badHost)} is not a host name, an IP address or *.domain`,
    );
  return {
    allowPrivate,
    allowHttp: !production,
    allowedHosts,
    dispatcher: flag("LICENSD_WEBHOOK_DISPATCHER", true),
    historyDays: int("LICENSD_WEBHOOK_HISTORY_DAYS", 30, 1, 3650),
    pollMs: int("LICENSD_WEBHOOK_POLL_MS", 1_000, 10, 60_000),
    leaseMs: int("LICENSD_WEBHOOK_LEASE_MS", 60_000, 1_000, 3_600_000),
  };
}

/** LICENSD_SMTP_*: where license-key e-mails go out. Production refuses plain SMTP except to this machine. */
function readSmtp({ str, int, problems }: Settings, production: boolean): SmtpSettings {
  const host = str("LICENSD_SMTP_HOST");
  const tls = str("LICENSD_SMTP_TLS") ?? "starttls";
  if (tls !== "starttls" && tls !== "implicit" && tls !== "none")
    problems.push(`LICENSD_SMTP_TLS=${JSON.stringify(tls)}: must be starttls, implicit or none`);
  const mode = tls === "implicit" || tls === "none" ? tls : "starttls";
  const user = str("LICENSD_SMTP_USER");
  const password = str("LICENSD_SMTP_PASSWORD");
  if ((user === undefined) !== (password === undefined))
    problems.push("LICENSD_SMTP_USER and LICENSD_SMTP_PASSWORD: give both or neither");
  const from = str("LICENSD_SMTP_FROM") ?? "";
  if (host !== undefined && from === "") problems.push("LICENSD_SMTP_FROM: required with LICENSD_SMTP_HOST");
  const loopback = host === "localhost" || host === "::1" || host?.startsWith("127.") === true;
  if (production && host !== undefined && mode === "none" && !loopback)
    problems.push(
      "LICENSD_SMTP_TLS=none: license keys would cross the network in clear; use starttls or implicit " +
        "(none is allowed in production only to a relay on this machine)",
    );
  return {
    host,
    port: int("LICENSD_SMTP_PORT", mode === "implicit" ? 465 : 587, 1, 65535),
    tls: mode,
    user,
    password,
    from,
    pollMs: int("LICENSD_EMAIL_POLL_MS", 1_000, 10, 60_000),
  };
}

/** The entries of a JSON-object setting: [] when unset, null when it is not a JSON object. */
function jsonEntries(text: string | undefined): [string, unknown][] | null {
  if (text === undefined) return [];
  try {
    const parsed: unknown = JSON.parse(text);
    return typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? Object.entries(parsed) : null;
  } catch {
    return null;
  }
}

/** The estimator behind `weakSecret`, loaded on first use (its dictionaries take a moment and some memory). */
let estimator: ZxcvbnFactory | undefined;
function estimate(text: string): number {
  if (!estimator) {
    const require = createRequire(import.meta.url);
    const { ZxcvbnFactory: Factory } = require("@zxcvbn-ts/core") as typeof import("@zxcvbn-ts/core");
    const common = require("@zxcvbn-ts/language-common") as typeof import("@zxcvbn-ts/language-common");
    // (up to 10 l33t substitutions per word: past that the search costs seconds and finds nothing more here)
    estimator = new Factory({
      dictionary: common.dictionary,
      graphs: common.adjacencyGraphs,
      l33tMaxSubstitutions: 10,
    });
  }
  return estimator.check(text).guessesLog10;
}

/** The share of a key's characters whose worth the strength estimate must reach (docs/security.md). */
export const SUPER_ADMIN_KEY_MIN_RATIO = 0.8;

/**
 * Why a super-admin key is too weak for production, or undefined when it is fine. Two
 * rules: it decodes (hex, base64 or base64url) to at least 32 bytes; and zxcvbn-ts
 * estimates at least 10^(0.8·n) guesses for its n characters (padding aside, 64 at most), i.e. finds
 * at most a fifth of it made of words, names, dates, sequences, repeats or keyboard walks.
 * Generated keys find close to none (10^0.9n and up in every sample), human-made ones much.
 */
export function weakSecret(secret: string): string | undefined {
  const how = "at least 32 random bytes written as hex, base64 or base64url (e.g. `openssl rand -base64 32`)";
  const bytes = decodeKey(secret, false);
  if (!bytes) return `must be ${how}; this one is not hex, base64 or base64url`;
  if (bytes.length < 32) return `must be ${how}; this one decodes to ${bytes.length} bytes`;
  // (the first 64 characters: all of a generated key, and the estimate's cost grows with the square of the length)
  const text = secret.replace(/=+$/, "").slice(0, 64);
  const log10 = estimate(text);
  const needed = SUPER_ADMIN_KEY_MIN_RATIO * text.length;
  if (log10 < needed) {
    return (
      `must be ${how}, and look random: zxcvbn's strength estimate must reach 10^${Math.ceil(needed)} guesses ` +
      `(0.8 × its ${text.length} characters), this one gets 10^${Math.floor(log10)}: ` +
      "it holds words, dates, sequences, repeats or keyboard patterns"
    );
  }
  return undefined;
}

function decodeKey(text: string, exact32 = true): Buffer | undefined {
  let buf: Buffer | undefined;
  if (/^[0-9a-fA-F]+$/.test(text) && text.length % 2 === 0) buf = Buffer.from(text, "hex");
  else if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) buf = Buffer.from(text, "base64");
  if (!buf) return undefined;
  if (exact32 && buf.length !== 32) return undefined;
  return buf;
}

export { loadDevSecrets, openDevSecrets };
