/*
 * The data keyring (LICENSD_DATA_KEY seals, LICENSD_DATA_KEY_PREVIOUS only opens) and its settings.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../src/config.js";
import { DataKeyring, dataKeyFingerprint, open, seal } from "../../src/platform/crypto.js";
import { createLogger } from "../../src/platform/logger.js";

const oldKey = randomBytes(32);
const newKey = randomBytes(32);
const otherKey = randomBytes(32);

describe("DataKeyring", () => {
  it("seals under the current key only, and opens what the current or a previous key sealed", () => {
    const ring = new DataKeyring(newKey, [oldKey]);
    const sealedNew = seal(ring, Buffer.from("new secret"), "lic_1");
    // Sealed under the current key: the old key alone does not open it, the new key alone does.
    expect(() => open(oldKey, sealedNew, "lic_1")).toThrow();
    expect(open(newKey, sealedNew, "lic_1").toString()).toBe("new secret");

    // A value sealed before the rotation, with a bare key (today's layout, no key id), opens through the ring.
    const sealedOld = seal(oldKey, Buffer.from("old secret"), "lic_2");
    expect(open(ring, sealedOld, "lic_2").toString()).toBe("old secret");
    expect(ring.unseal(sealedOld, "lic_2")?.keyIndex).toBe(1);
    expect(ring.unseal(sealedNew, "lic_1")?.keyIndex).toBe(0);
  });

  it("opens nothing under a key it does not hold, nor a value moved to another row (associated data)", () => {
    const ring = new DataKeyring(newKey, [oldKey]);
    const foreign = seal(otherKey, Buffer.from("x"), "lic_3");
    expect(ring.unseal(foreign, "lic_3")).toBeUndefined();
    expect(() => open(ring, foreign, "lic_3")).toThrow(/no data key opens/);
    expect(ring.unseal(seal(ring, Buffer.from("x"), "lic_3"), "lic_4")).toBeUndefined();
    expect(ring.unseal(Buffer.from("short"), "")).toBeUndefined();
  });

  it("names keys by a fingerprint that is not the key, and shows no key when logged or serialized", () => {
    const ring = new DataKeyring(newKey, [oldKey]);
    expect(ring.fingerprints()).toEqual([dataKeyFingerprint(newKey), dataKeyFingerprint(oldKey)]);
    expect(dataKeyFingerprint(newKey)).toMatch(/^[0-9a-f]{8}$/);
    expect(dataKeyFingerprint(newKey)).not.toBe(dataKeyFingerprint(oldKey));
    let line = "";
    const logger = createLogger("info", { write: (s: string) => (line += s) });
    logger.info(
      {
        ring,
        config: { previousDataKeys: [oldKey.toString("base64")] },
        env: { LICENSD_DATA_KEY_PREVIOUS: oldKey.toString("base64") },
      },
      "x",
    );
    expect(JSON.stringify(ring)).toBe("{}");
    for (const key of [newKey, oldKey]) {
      expect(line).not.toContain(key.toString("base64"));
      expect(line).not.toContain(key.toString("hex"));
    }
  });
});

describe("LICENSD_DATA_KEY_PREVIOUS", () => {
  const base = {
    LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-datakey-")),
    LICENSD_SUPER_ADMIN_KEY: "Zq3v8XkP2mN7rT1yB6wE9uA4sD0fG5hJ-LcVxQoIiR_",
    LICENSD_DATA_KEY: newKey.toString("base64"),
  };
  const problems = (previous: string) => {
    try {
      loadConfig({ ...base, LICENSD_DATA_KEY_PREVIOUS: previous });
    } catch (err) {
      if (err instanceof ConfigError) return err.problems;
      throw err;
    }
    return [];
  };

  it("reads one or more comma-separated keys, base64 or hex; unset is none", () => {
    expect(loadConfig(base).previousDataKeys).toEqual([]);
    const two = loadConfig({
      ...base,
      LICENSD_DATA_KEY_PREVIOUS: `${oldKey.toString("base64")}, ${otherKey.toString("hex")}`,
    });
    expect(two.previousDataKeys.map((k) => k.toString("hex"))).toEqual([
      oldKey.toString("hex"),
      otherKey.toString("hex"),
    ]);
  });

  it("names a malformed key, the current key listed again and a duplicate", () => {
    expect(problems("not-a-key")).toEqual([
      "LICENSD_DATA_KEY_PREVIOUS: key 1 of 1 must be 32 bytes, as 64 hex characters or base64 (keys separated by commas)",
    ]);
    expect(problems(`${oldKey.toString("base64")},${randomBytes(16).toString("base64")}`)[0]).toMatch(
      /^LICENSD_DATA_KEY_PREVIOUS: key 2 of 2 must be 32 bytes/,
    );
    expect(problems(`${oldKey.toString("base64")},`)[0]).toMatch(/^LICENSD_DATA_KEY_PREVIOUS: key 2 of 2 must be/);
    expect(problems(newKey.toString("hex"))).toEqual([
      "LICENSD_DATA_KEY_PREVIOUS: key 1 of 1 is LICENSD_DATA_KEY itself: list only the keys that no longer seal",
    ]);
    expect(problems(`${oldKey.toString("base64")},${oldKey.toString("hex")}`)).toEqual([
      "LICENSD_DATA_KEY_PREVIOUS: key 2 of 2 is listed twice",
    ]);
  });

  it("production keeps requiring LICENSD_DATA_KEY: a previous key alone is not enough", () => {
    try {
      loadConfig({
        LICENSD_ENV: "production",
        LICENSD_DATABASE_URL: "postgres://db/x",
        LICENSD_SUPER_ADMIN_KEY: base.LICENSD_SUPER_ADMIN_KEY,
        LICENSD_DATA_KEY_PREVIOUS: oldKey.toString("base64"),
      });
      expect.unreachable();
    } catch (err) {
      expect((err as ConfigError).problems.some((p) => p.startsWith("LICENSD_DATA_KEY: required in production"))).toBe(
        true,
      );
    }
  });
});
