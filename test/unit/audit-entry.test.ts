import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { AuditKeyring } from "../../src/events/audit-keyring.js";
import { entryHash, GENESIS_HASH } from "../../src/events/events.js";
import { checkpointText } from "../../src/audit/checkpoint.js";
import { loadConfig, ConfigError } from "../../src/config.js";

const base = {
  tenantId: "ten_01m83r6x800jm63cm6fd3vhmnw",
  seq: 1,
  id: "evt_01m83r6x800jm63cm6fd3vhmnx",
  type: "tenant.created",
  subject: "ten_01m83r6x800jm63cm6fd3vhmnw",
  actor: "super_admin",
  payload: { name: "Acme", metadata: { b: "2", a: "1" } },
  occurredAt: new Date("2026-11-23T10:00:00.123Z"),
  prevHash: GENESIS_HASH,
};

describe("audit entry hash", () => {
  it("is SHA-256 of the RFC 8785 canonical JSON, independent of key order", () => {
    const h = entryHash(base);
    expect(entryHash({ ...base, payload: { metadata: { a: "1", b: "2" }, name: "Acme" } }).equals(h)).toBe(true);
    // The documented canonical form, computed independently.
    const canonical =
      '{"actor":"super_admin","id":"evt_01m83r6x800jm63cm6fd3vhmnx","occurred_at":"2026-11-23T10:00:00.123Z","payload":{"metadata":{"a":"1","b":"2"},"name":"Acme"},' +
      `"prev_hash":"${"00".repeat(32)}","seq":1,"subject":"ten_01m83r6x800jm63cm6fd3vhmnw","tenant_id":"ten_01m83r6x800jm63cm6fd3vhmnw","type":"tenant.created"}`;
    expect(h.toString("hex")).toBe(createHash("sha256").update(canonical).digest("hex"));
  });
  it("changes with every field", () => {
    const h = entryHash(base);
    for (const change of [
      { seq: 2 },
      { type: "tenant.updated" },
      { actor: "system" },
      { payload: { name: "Acme!" } },
      { occurredAt: new Date(base.occurredAt.getTime() + 1) },
      { prevHash: Buffer.alloc(32, 1) },
    ]) {
      expect(entryHash({ ...base, ...change }).equals(h), JSON.stringify(change)).toBe(false);
    }
  });
});

describe("audit keyring", () => {
  it("signs with the newest key and verifies with every key, so keys rotate", () => {
    const dataKey = Buffer.alloc(32, 3);
    const before = new AuditKeyring(dataKey);
    const hash = entryHash(base);
    const old = before.sign(hash);
    expect(old.kid).toBe("dk1");
    const after = new AuditKeyring(dataKey, { a2026: Buffer.alloc(32, 4) });
    const fresh = after.sign(hash);
    expect(fresh.kid).toBe("a2026");
    expect(after.verify(old.kid, hash, old.signature)).toBe(true);
    expect(after.verify(fresh.kid, hash, fresh.signature)).toBe(true);
    expect(after.verify("a2026", hash, old.signature)).toBe(false);
    expect(after.verify("unknown", hash, fresh.signature)).toBe(false);
    expect(new AuditKeyring(Buffer.alloc(32, 5)).verify("dk1", hash, old.signature)).toBe(false);
  });
  it("reads LICENSD_AUDIT_HMAC_KEYS and names bad entries", () => {
    const env = {
      LICENSD_DATA_DIR: "/tmp/licensd-keyring-test",
      LICENSD_SUPER_ADMIN_KEY: "x".repeat(50),
      LICENSD_DATA_KEY: Buffer.alloc(32, 1).toString("base64"),
    };
    const ok = loadConfig({
      ...env,
      LICENSD_AUDIT_HMAC_KEYS: JSON.stringify({ k2: Buffer.alloc(32, 2).toString("hex") }),
    });
    expect(Object.keys(ok.auditHmacKeys)).toEqual(["k2"]);
    for (const bad of [
      "not json",
      "[]",
      JSON.stringify({ dk1: Buffer.alloc(32).toString("hex") }),
      JSON.stringify({ k: "short" }),
    ]) {
      expect(() => loadConfig({ ...env, LICENSD_AUDIT_HMAC_KEYS: bad })).toThrow(ConfigError);
    }
  });
});

describe("checkpoint text", () => {
  it("is the documented line format", () => {
    expect(checkpointText("ten_x", 3, Buffer.alloc(32, 255), new Date(1000))).toBe(
      `licensd.dev/audit/v1\nten_x\n3\n${Buffer.alloc(32, 255).toString("base64")}\n1000\n`,
    );
  });
});
