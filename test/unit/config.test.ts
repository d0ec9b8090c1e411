import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, parseRate, weakSecret } from "../../src/config.js";

const tmp = () => mkdtempSync(path.join(os.tmpdir(), "licensd-config-"));
const strongKey = "Zq3v8XkP2mN7rT1yB6wE9uA4sD0fG5hJ-LcVxQoIiR_";
const dataKey = Buffer.alloc(32, 7).toString("base64");

function problems(env: Record<string, string>): string[] {
  try {
    // In a temp data dir: development mode writes generated secrets there (never ./.licensd of the checkout).
    loadConfig({ LICENSD_DATA_DIR: tmp(), ...env });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe("config", () => {
  it("production refuses to start without a database URL, a strong super-admin key and a data key", () => {
    const p = problems({ LICENSD_ENV: "production", LICENSD_DATA_DIR: tmp() });
    expect(p.some((x) => x.startsWith("LICENSD_DATABASE_URL"))).toBe(true);
    expect(p.some((x) => x.startsWith("LICENSD_SUPER_ADMIN_KEY"))).toBe(true);
    expect(p.some((x) => x.startsWith("LICENSD_DATA_KEY"))).toBe(true);
  });

  it("production refuses weak super-admin keys", () => {
    const base = { LICENSD_ENV: "production", LICENSD_DATABASE_URL: "postgres://db/x", LICENSD_DATA_KEY: dataKey };
    for (const weak of ["short", "a".repeat(64), "abababababababababababababababababababababab"]) {
      expect(problems({ ...base, LICENSD_SUPER_ADMIN_KEY: weak }).join()).toContain("LICENSD_SUPER_ADMIN_KEY");
    }
    const ok = loadConfig({ ...base, LICENSD_SUPER_ADMIN_KEY: strongKey });
    expect(ok).toMatchObject({ env: "production", host: "0.0.0.0", databaseUrl: "postgres://db/x" });
    expect(ok.generated).toEqual([]);
  });

  it("production requires super-admin keys of 32+ bytes that look random, and says so", () => {
    const base = { LICENSD_ENV: "production", LICENSD_DATABASE_URL: "postgres://db/x", LICENSD_DATA_KEY: dataKey };
    const human = [
      "Password1234567890Password1234567890abcdefg", // decodes to 32 bytes: words, digits in a row, a repeat
      "MySuperSecretAdminKeyForLicensdProduction2026",
      "correcthorsebatterystaplecorrecthorsebattery",
      "qwertyuiopasdfghjklzxcvbnmqwertyuiopasdfghjk",
      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
      "aaaabbbbccccddddeeeeffffgggghhhhiiiijjjjkkkk",
    ];
    for (const weak of human) {
      const [problem] = problems({ ...base, LICENSD_SUPER_ADMIN_KEY: weak });
      expect(problem, weak).toMatch(
        /^LICENSD_SUPER_ADMIN_KEY: must be at least 32 random bytes written as hex, base64 or base64url .*look random: zxcvbn's strength estimate must reach 10\^\d+ guesses/,
      );
    }
    expect(problems({ ...base, LICENSD_SUPER_ADMIN_KEY: randomBytes(31).toString("base64url") })).toEqual([
      "LICENSD_SUPER_ADMIN_KEY: must be at least 32 random bytes written as hex, base64 or base64url (e.g. `openssl rand -base64 32`); this one decodes to 31 bytes",
    ]);
    expect(problems({ ...base, LICENSD_SUPER_ADMIN_KEY: "not base64: has spaces and a colon" })[0]).toContain(
      "not hex, base64 or base64url",
    );
    // Development takes any key (and never loads the estimator).
    expect(
      loadConfig({ LICENSD_DATA_DIR: tmp(), LICENSD_SUPER_ADMIN_KEY: human[0]!, LICENSD_DATA_KEY: dataKey })
        .superAdminKey,
    ).toBe(human[0]);
  });

  it("accepts every generated super-admin key: randomBytes(32) as base64url, `openssl rand -base64 32`, `openssl rand -hex 32`", () => {
    let checked = 0;
    for (let i = 0; i < 334; i++) {
      for (const encoding of ["base64url", "base64", "hex"] as const) {
        const key = randomBytes(32).toString(encoding);
        expect(weakSecret(key), key).toBeUndefined();
        checked++;
      }
    }
    expect(checked).toBe(1002);
  }, 120_000);

  it("NODE_ENV=production alone means production; LICENSD_ENV=development still wins, with a warning", () => {
    const p = problems({ NODE_ENV: "production", LICENSD_DATA_DIR: tmp() });
    for (const name of ["LICENSD_DATABASE_URL", "LICENSD_SUPER_ADMIN_KEY", "LICENSD_DATA_KEY"])
      expect(
        p.some((x) => x.startsWith(name)),
        name,
      ).toBe(true);
    const prod = loadConfig({
      NODE_ENV: "production",
      LICENSD_DATABASE_URL: "postgres://db/x",
      LICENSD_SUPER_ADMIN_KEY: strongKey,
      LICENSD_DATA_KEY: dataKey,
    });
    expect(prod).toMatchObject({ env: "production", host: "0.0.0.0", generated: [], warnings: [] });
    const dev = loadConfig({ NODE_ENV: "production", LICENSD_ENV: "development", LICENSD_DATA_DIR: tmp() });
    expect(dev.env).toBe("development");
    expect(dev.warnings).toEqual([expect.stringContaining("NODE_ENV=production, but LICENSD_ENV=development")]);
    expect(loadConfig({ NODE_ENV: "development", LICENSD_DATA_DIR: tmp() }).env).toBe("development");
  });

  it("reads the webhook settings: https only in production, private addresses a loud opt-in, bad values named", () => {
    const prodEnv = {
      LICENSD_ENV: "production",
      LICENSD_DATABASE_URL: "postgres://db/x",
      LICENSD_SUPER_ADMIN_KEY: strongKey,
      LICENSD_DATA_KEY: dataKey,
    };
    expect(loadConfig(prodEnv).webhooks).toEqual({
      allowPrivate: false,
      allowHttp: false,
      allowedHosts: [],
      dispatcher: true,
      historyDays: 30,
      pollMs: 1000,
      leaseMs: 60_000,
    });
    const open = loadConfig({ ...prodEnv, LICENSD_WEBHOOK_ALLOW_PRIVATE: "true" });
    expect(open.webhooks.allowPrivate).toBe(true);
    expect(open.warnings).toEqual([expect.stringContaining("LICENSD_WEBHOOK_ALLOW_PRIVATE=true")]);
    const dev = loadConfig({
      LICENSD_DATA_DIR: tmp(),
      LICENSD_WEBHOOK_ALLOWED_HOSTS: "hooks.example.com, *.vendor.test",
      LICENSD_WEBHOOK_DISPATCHER: "false",
    });
    expect(dev.webhooks).toMatchObject({
      allowHttp: true,
      allowedHosts: ["hooks.example.com", "*.vendor.test"],
      dispatcher: false,
    });
    const p = problems({
      LICENSD_DATA_DIR: tmp(),
      LICENSD_WEBHOOK_ALLOW_PRIVATE: "yes",
      LICENSD_WEBHOOK_HISTORY_DAYS: "0",
      LICENSD_WEBHOOK_ALLOWED_HOSTS: "hooks.example.com/path",
      LICENSD_WEBHOOK_LEASE_MS: "5",
    });
    for (const name of [
      "LICENSD_WEBHOOK_ALLOW_PRIVATE",
      "LICENSD_WEBHOOK_HISTORY_DAYS",
      "LICENSD_WEBHOOK_ALLOWED_HOSTS",
      "LICENSD_WEBHOOK_LEASE_MS",
    ])
      expect(
        p.some((x) => x.startsWith(name)),
        name,
      ).toBe(true);
  });

  it("LICENSD_SMTP_*: off by default; From and both credentials required; production refuses plain SMTP off-host", () => {
    expect(loadConfig({ LICENSD_DATA_DIR: tmp() }).smtp).toMatchObject({ host: undefined, port: 587, tls: "starttls" });
    const on = loadConfig({
      LICENSD_DATA_DIR: tmp(),
      LICENSD_SMTP_HOST: "smtp.example.com",
      LICENSD_SMTP_TLS: "implicit",
      LICENSD_SMTP_USER: "licensd",
      LICENSD_SMTP_PASSWORD: "s3cret-password",
      LICENSD_SMTP_FROM: "Acme <licenses@acme.example>",
    });
    expect(on.smtp).toMatchObject({ host: "smtp.example.com", port: 465, tls: "implicit", user: "licensd" });
    const p = problems({
      LICENSD_DATA_DIR: tmp(),
      LICENSD_SMTP_HOST: "smtp.example.com",
      LICENSD_SMTP_TLS: "maybe",
      LICENSD_SMTP_USER: "licensd",
      LICENSD_SMTP_PORT: "70000",
    });
    for (const name of ["LICENSD_SMTP_TLS", "LICENSD_SMTP_USER", "LICENSD_SMTP_FROM", "LICENSD_SMTP_PORT"])
      expect(
        p.some((x) => x.startsWith(name)),
        name,
      ).toBe(true);
    const production = {
      LICENSD_ENV: "production",
      LICENSD_DATABASE_URL: "postgres://db/x",
      LICENSD_DATA_KEY: dataKey,
      LICENSD_SUPER_ADMIN_KEY: strongKey,
      LICENSD_SMTP_TLS: "none",
      LICENSD_SMTP_FROM: "licenses@acme.example",
    };
    expect(problems({ ...production, LICENSD_SMTP_HOST: "smtp.example.com" })).toEqual([
      expect.stringContaining("LICENSD_SMTP_TLS=none"),
    ]);
    expect(loadConfig({ ...production, LICENSD_SMTP_HOST: "127.0.0.1" }).smtp.tls).toBe("none");
  });

  it("reads trusted proxies, the forwarding header and the key failure budgets, and names bad ones", () => {
    const ok = loadConfig({
      LICENSD_DATA_DIR: tmp(),
      LICENSD_TRUSTED_PROXIES: "10.0.0.0/8, 2001:db8::/32,127.0.0.1",
      LICENSD_FORWARDED_HEADER: "Forwarded",
      LICENSD_KEY_FAILURE_RATE_PER_IP: "0",
    });
    expect(ok).toMatchObject({
      trustedProxies: ["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"],
      forwardedHeader: "forwarded",
      keyFailureRatePerIp: null,
      keyCollisionRatePerTenant: { capacity: 30, periodSeconds: 3600 },
    });
    expect(loadConfig({ LICENSD_DATA_DIR: tmp() })).toMatchObject({
      trustedProxies: [],
      forwardedHeader: "x-forwarded-for",
      keyFailureRatePerIp: { capacity: 60, periodSeconds: 60 },
    });
    const p = problems({
      LICENSD_TRUSTED_PROXIES: "10.0.0.0/8,proxy.example,300.1.1.1",
      LICENSD_FORWARDED_HEADER: "x-real-ip",
      LICENSD_KEY_FAILURE_RATE_PER_IP: "many",
      LICENSD_KEY_COLLISION_RATE_PER_TENANT: "1/1d",
    });
    expect(p).toContainEqual('LICENSD_TRUSTED_PROXIES: not an IPv4/IPv6 address or CIDR: "proxy.example", "300.1.1.1"');
    for (const name of [
      "LICENSD_FORWARDED_HEADER",
      "LICENSD_KEY_FAILURE_RATE_PER_IP",
      "LICENSD_KEY_COLLISION_RATE_PER_TENANT",
    ])
      expect(
        p.some((x) => x.startsWith(name)),
        name,
      ).toBe(true);
  });

  it("behind a transaction-pooling PgBouncer, requires the direct URL and names what is wrong", () => {
    const bouncer = "postgres://licensd@pgbouncer:6432/licensd";
    const direct = "postgres://licensd@db:5432/licensd";
    expect(loadConfig({ LICENSD_DATA_DIR: tmp(), LICENSD_DATABASE_URL: direct })).toMatchObject({
      databasePooler: "none",
      databaseDirectUrl: undefined,
    });
    expect(
      loadConfig({
        LICENSD_DATA_DIR: tmp(),
        LICENSD_DATABASE_URL: bouncer,
        LICENSD_DATABASE_DIRECT_URL: direct,
        LICENSD_DATABASE_POOLER: "pgbouncer-transaction",
      }),
    ).toMatchObject({ databaseUrl: bouncer, databaseDirectUrl: direct, databasePooler: "pgbouncer-transaction" });
    const missing = problems({
      LICENSD_DATA_DIR: tmp(),
      LICENSD_DATABASE_URL: bouncer,
      LICENSD_DATABASE_POOLER: "pgbouncer-transaction",
    });
    expect(missing).toHaveLength(1);
    expect(missing[0]).toMatch(
      /^LICENSD_DATABASE_DIRECT_URL: required with LICENSD_DATABASE_POOLER=pgbouncer-transaction/,
    );
    expect(missing[0]).toContain("LISTEN");
    const bad = problems({
      LICENSD_DATA_DIR: tmp(),
      LICENSD_DATABASE_DIRECT_URL: "mysql://db/licensd",
      LICENSD_DATABASE_POOLER: "pgpool",
    });
    expect(bad).toEqual([
      "LICENSD_DATABASE_DIRECT_URL: must be a postgres:// or postgresql:// URL",
      "LICENSD_DATABASE_DIRECT_URL: needs LICENSD_DATABASE_URL too (the embedded PostgreSQL has no pooler)",
      'LICENSD_DATABASE_POOLER="pgpool": must be one of none, pgbouncer-transaction',
    ]);
  });

  it("names every bad value", () => {
    const p = problems({
      LICENSD_PORT: "http",
      LICENSD_ENV: "staging",
      LICENSD_LOG_LEVEL: "loud",
      LICENSD_DATABASE_URL: "mysql://x",
      LICENSD_DATA_KEY: "tooshort",
      LICENSD_TLS_CERT: "/nope",
      LICENSD_DB_POOL_MAX: "0",
      LICENSD_WORKERS: "many",
      LICENSD_SHUTDOWN_TIMEOUT_MS: "-1",
      LICENSD_AUDIT_KEEPALIVE_MS: "1.5",
      LICENSD_HEARTBEAT_SWEEP_MS: "10",
    });
    const named = [
      "LICENSD_PORT",
      "LICENSD_ENV",
      "LICENSD_LOG_LEVEL",
      "LICENSD_DATABASE_URL",
      "LICENSD_DATA_KEY",
      "LICENSD_TLS_CERT",
    ];
    // (numeric settings were once read after the check, and a bad one silently became its default)
    for (const name of [
      ...named,
      "LICENSD_DB_POOL_MAX",
      "LICENSD_WORKERS",
      "LICENSD_SHUTDOWN_TIMEOUT_MS",
      "LICENSD_AUDIT_KEEPALIVE_MS",
      "LICENSD_HEARTBEAT_SWEEP_MS",
    ]) {
      expect(
        p.some((x) => x.startsWith(name)),
        name,
      ).toBe(true);
    }
  });

  it("reads activation rate limits as <burst>/<period>, 0 to disable, and names bad ones", () => {
    expect(parseRate("60/1m")).toEqual({ capacity: 60, periodSeconds: 60 });
    expect(parseRate("10/30s")).toEqual({ capacity: 10, periodSeconds: 30 });
    expect(parseRate("1000/2h")).toEqual({ capacity: 1000, periodSeconds: 7200 });
    expect(parseRate("0")).toBeNull();
    expect(parseRate("off")).toBeNull();
    for (const bad of ["60", "60/m", "0/1m", "60/0s", "-1/1m", "1.5/1m", "60 / 1m"])
      expect(parseRate(bad), bad).toBeUndefined();
    const p = problems({ LICENSD_ACTIVATION_RATE_PER_LICENSE: "lots", LICENSD_ACTIVATION_RATE_PER_IP: "5/1d" });
    expect(p.filter((x) => x.startsWith("LICENSD_ACTIVATION_RATE_PER_"))).toHaveLength(2);
    const config = loadConfig({ LICENSD_DATA_DIR: tmp(), LICENSD_ACTIVATION_RATE_PER_IP: "0" });
    expect([config.activationRatePerLicense, config.activationRatePerIp]).toEqual([
      { capacity: 100, periodSeconds: 60 },
      null,
    ]);
  });

  it("reads the license key keyring (Vinzy's format) and names bad ones", () => {
    const env = { LICENSD_DATA_DIR: tmp(), LICENSD_SUPER_ADMIN_KEY: strongKey, LICENSD_DATA_KEY: dataKey };
    expect(
      loadConfig({ ...env, LICENSD_HMAC_KEYS: '{"0":"old-secret-123456","3":"new-secret-123456"}' }).licenseKeySecrets,
    ).toEqual({ "0": "old-secret-123456", "3": "new-secret-123456" });
    expect(loadConfig(env).licenseKeySecrets).toBeUndefined(); // version 0: the data-key material, stored
    for (const bad of ["nope", "[]", '{"32":"long-enough-secret"}', '{"0":"short"}', '{"x":"long-enough-secret"}']) {
      expect(problems({ ...env, LICENSD_HMAC_KEYS: bad }).join(), bad).toContain("LICENSD_HMAC_KEYS");
    }
  });

  it("development generates missing secrets once, keeps them private, and reuses them", () => {
    const dir = tmp();
    const first = loadConfig({ LICENSD_DATA_DIR: dir });
    expect(first.generated).toEqual(["LICENSD_SUPER_ADMIN_KEY", "LICENSD_DATA_KEY"]);
    expect(first.superAdminKey.length).toBeGreaterThanOrEqual(43);
    expect(first.dataKey.length).toBe(32);
    expect(first.host).toBe("127.0.0.1");
    const file = path.join(dir, "secrets.json");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(file, "utf8")).superAdminKey).toBe(first.superAdminKey);
    const second = loadConfig({ LICENSD_DATA_DIR: dir });
    expect(second.superAdminKey).toBe(first.superAdminKey);
    expect(second.dataKey.equals(first.dataKey)).toBe(true);
    // Loaded, not generated: nothing to announce, only where they are kept.
    expect(second.generated).toEqual([]);
    expect(second.devSecretsFile).toBe(file);
  });
});
