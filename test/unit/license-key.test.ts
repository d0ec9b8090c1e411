import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { checkLicenseKey, generateLicenseKey, KEY_ALPHABET, LicenseKeyring } from "../../src/licensing/license-key.js";

function runReference(requests: object[]): string[] {
  const res = spawnSync("/usr/bin/python3", [path.join(import.meta.dirname, "vinzy_reference.py")], {
    input: `${requests.map((r) => JSON.stringify(r)).join("\n")}\n`,
    encoding: "utf8",
  });
  if (res.status !== 0) throw new Error(res.stderr);
  return res.stdout.trim().split("\n");
}

/** Full keys for the given bodies, from the independent Python reference of Vinzy's algorithm. */
const reference = (requests: { body: string; secret: string }[]) => runReference(requests);

/** Vinzy's keyring verdict (verify_hmac_multi) for each key, from the same reference. */
const referenceAccepts = (keys: string[], keyring: Record<string, string>) =>
  runReference(keys.map((verify) => ({ verify, keyring }))).map((r) => r === "true");

/** A key body whose first random character is `first`, the rest random. */
const bodyStartingWith = (first: string) => {
  const rest = Array.from(randomBytes(24), (b) => KEY_ALPHABET[b & 31]).join("");
  const random = first + rest;
  return `PRD-${[0, 5, 10, 15, 20].map((i) => random.slice(i, i + 5)).join("-")}`;
};

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

  it("accepts exactly the keys Vinzy's keyring check accepts, pre-versioning keys naming another version included", () => {
    const ring = { "0": "legacy-secret", "1": "second-secret", "2": "current-secret" };
    const three = new LicenseKeyring(ring);
    const requests: { body: string; secret: string }[] = [];
    const expected: boolean[] = [];
    // Keys of each version signed by their own secret.
    for (const [v, secret] of Object.entries(ring))
      for (let i = 0; i < 4; i++) {
        requests.push({ body: bodyStartingWith(KEY_ALPHABET[Number(v)]), secret });
        expected.push(true);
      }
    // Pre-versioning keys: signed by the legacy secret, first character random (every one of the 32, "B" and "C" name
    // versions 1 and 2).
    for (const first of KEY_ALPHABET) {
      requests.push({ body: bodyStartingWith(first), secret: "legacy-secret" });
      expected.push(true);
    }
    // Any secret of the ring is tried, whatever the first character names.
    for (const first of "ACZ7") {
      requests.push({ body: bodyStartingWith(first), secret: "second-secret" });
      expected.push(true);
    }
    // Forged: signed by a secret outside the ring, for every first character.
    for (const first of KEY_ALPHABET) {
      requests.push({ body: bodyStartingWith(first), secret: "not-in-the-ring" });
      expected.push(false);
    }
    const keys = reference(requests);
    // Forged: a valid key's body altered after signing, and a made-up signature.
    for (const key of keys.slice(0, 20)) {
      keys.push(`${key.slice(0, 4)}${key[4] === "B" ? "C" : "B"}${key.slice(5)}`, `${key.slice(0, 34)}AAAAA-AAAAA`);
      expected.push(false, false);
    }
    const vinzy = referenceAccepts(keys, ring);
    expect(vinzy).toEqual(expected);
    expect(keys.map((k) => checkLicenseKey(k, three).ok)).toEqual(vinzy);
    const collided = keys.filter((k, i) => vinzy[i] && (k[4] === "B" || k[4] === "C"));
    expect(collided.length).toBeGreaterThanOrEqual(3);
    for (const k of collided)
      expect(checkLicenseKey(k, three)).toEqual({ ok: true, productCode: "PRD", version: KEY_ALPHABET.indexOf(k[4]) });
  });

  it("rejects bad formats and forged signatures", () => {
    const key = generateLicenseKey("PRD", keyring);
    for (const bad of [
      "",
      "PRD",
      key.toLowerCase(),
      key.slice(0, -1),
      `${key}A`,
      key.replace(/-/g, ""),
      `PR-${key.slice(3)}`,
      key.replace(/^PRD-./, "PRD-1"),
    ]) {
      expect(checkLicenseKey(bad, keyring), bad).toEqual({ ok: false, code: "FORMAT_INVALID" });
    }
    const flipped = key.slice(0, 10) + (key[10] === "A" ? "B" : "A") + key.slice(11);
    expect(checkLicenseKey(flipped, keyring)).toEqual({ ok: false, code: "SIGNATURE_INVALID" });
    expect(checkLicenseKey(key, new LicenseKeyring({ "3": "another-secret" }))).toEqual({
      ok: false,
      code: "SIGNATURE_INVALID",
    });
  });

  it("refuses bad keyrings and product codes", () => {
    expect(() => new LicenseKeyring({})).toThrow();
    expect(() => new LicenseKeyring({ "32": "x" })).toThrow();
    expect(() => generateLicenseKey("prd", keyring)).toThrow();
  });
});
