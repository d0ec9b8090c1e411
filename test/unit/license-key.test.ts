import { spawnSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { checkLicenseKey, generateLicenseKey, KEY_ALPHABET, LicenseKeyring } from "../../src/licensing/license-key.js";

/** Full keys for the given bodies, from the independent Python reference of Vinzy's algorithm. */
function reference(requests: { body: string; secret: string }[]): string[] {
  const res = spawnSync("/usr/bin/python3", [path.join(import.meta.dirname, "vinzy_reference.py")], { input: requests.map((r) => JSON.stringify(r)).join("\n") + "\n", encoding: "utf8" });
  if (res.status !== 0) throw new Error(res.stderr);
  return res.stdout.trim().split("\n");
}

describe("Vinzy-compatible license keys", () => {
  const keyring = new LicenseKeyring({ "0": "old-secret", "3": "current-secret" });

  it("generates keys in the published format, signed by the newest version", () => {
    const keys = Array.from({ length: 200 }, () => generateLicenseKey("PRD", keyring));
    for (const key of keys) {
      expect(key).toMatch(/^PRD(-[A-Z2-7]{5}){7}$/);
      expect(KEY_ALPHABET.indexOf(key[4])).toBe(3);
      expect(checkLicenseKey(key, keyring)).toEqual({ ok: true, productCode: "PRD", version: 3 });
    }
    expect(new Set(keys).size).toBe(keys.length);
  });

  it("matches an independent reference implementation byte for byte", () => {
    const keys = Array.from({ length: 50 }, (_, i) => generateLicenseKey(i % 2 ? "AB9" : "PRD", keyring));
    expect(reference(keys.map((k) => ({ body: k.slice(0, 33), secret: "current-secret" })))).toEqual(keys);
  });

  it("validates keys minted by the reference (as imported Vinzy keys would be), for every version", () => {
    const bodies = ["PRD-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE", "PRD-DQ2Z7-ABCDE-FGHIJ-KLMNO-PQRST"];
    const [v0, v3] = reference([
      { body: bodies[0], secret: "old-secret" },
      { body: bodies[1], secret: "current-secret" },
    ]);
    expect(checkLicenseKey(v0, keyring)).toEqual({ ok: true, productCode: "PRD", version: 0 });
    expect(checkLicenseKey(v3, keyring)).toEqual({ ok: true, productCode: "PRD", version: 3 });
  });

  it("tries every secret when the version has none (Vinzy's fallback)", () => {
    const [key] = reference([{ body: "PRD-ZZZZZ-BBBBB-CCCCC-DDDDD-EEEEE", secret: "old-secret" }]); // version 25: unknown
    expect(checkLicenseKey(key, keyring)).toMatchObject({ ok: true, version: 25 });
  });

  it("rejects bad formats and forged signatures", () => {
    const key = generateLicenseKey("PRD", keyring);
    for (const bad of ["", "PRD", key.toLowerCase(), key.slice(0, -1), `${key}A`, key.replace(/-/g, ""), `PR-${key.slice(3)}`, key.replace(/^PRD-./, "PRD-1")]) {
      expect(checkLicenseKey(bad, keyring), bad).toEqual({ ok: false, code: "FORMAT_INVALID" });
    }
    const flipped = key.slice(0, 10) + (key[10] === "A" ? "B" : "A") + key.slice(11);
    expect(checkLicenseKey(flipped, keyring)).toEqual({ ok: false, code: "SIGNATURE_INVALID" });
    expect(checkLicenseKey(key, new LicenseKeyring({ "3": "another-secret" }))).toEqual({ ok: false, code: "SIGNATURE_INVALID" });
  });

  it("refuses bad keyrings and product codes", () => {
    expect(() => new LicenseKeyring({})).toThrow();
    expect(() => new LicenseKeyring({ "32": "x" })).toThrow();
    expect(() => generateLicenseKey("prd", keyring)).toThrow();
  });
});
