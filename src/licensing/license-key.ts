import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { base32 } from "rfc4648";

/*
 * License keys in Vinzy-Engine's format, byte-compatible so existing Vinzy keys import
 * and validate:
 *
 *   PRD-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-HHHHH-HHHHH
 *
 * PRD is the product code (3 of A–Z0–9); five random segments over the RFC 4648 base32
 * alphabet (A–Z2–7), whose first character is the HMAC key version (its index in the
 * alphabet, 0–31); the last two segments are the first 10 characters of the unpadded
 * base32 of HMAC-SHA256(secret of that version, "PRD-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE").
 */

export const KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
export const KEY_PATTERN = /^[A-Z0-9]{3}(-[A-Z2-7]{5}){7}$/;
export const PRODUCT_CODE_PATTERN = /^[A-Z0-9]{3}$/;

/**
 * Random characters for new keys, from CSPRNG bytes drawn 4 KiB at a time: one system call per ~170 keys, not one per
 * key.
 */
export class KeyCharacterPool {
  private pool = Buffer.alloc(0);
  private at = 0;

  /** n uniform characters of the alphabet: 256 is a multiple of 32, so `byte & 31` has no bias. */
  chars(n: number): string {
    if (this.at + n > this.pool.length) {
      this.pool = randomBytes(4096);
      this.at = 0;
    }
    let out = "";
    for (let i = 0; i < n; i++) out += KEY_ALPHABET[this.pool[this.at + i] & 31];
    this.pool.fill(0, this.at, this.at + n); // used bytes are not left in memory
    this.at += n;
    return out;
  }
}

/** HMAC secrets by version (0–31); the highest version signs new keys, with random characters from its pool. */
export class LicenseKeyring {
  private readonly secrets = new Map<number, Buffer>();
  readonly currentVersion: number;

  constructor(
    secrets: Record<string, string>,
    private readonly random = new KeyCharacterPool(),
  ) {
    for (const [version, secret] of Object.entries(secrets)) {
      const v = Number(version);
      if (!Number.isInteger(v) || v < 0 || v > 31) throw new Error(`license key version ${version}: must be 0–31`);
      if (secret.length === 0) throw new Error(`license key version ${version}: empty secret`);
      this.secrets.set(v, Buffer.from(secret, "utf8"));
    }
    if (this.secrets.size === 0) throw new Error("the license keyring is empty");
    this.currentVersion = Math.max(...this.secrets.keys());
  }

  secret(version: number): Buffer | undefined {
    return this.secrets.get(version);
  }

  all(): Buffer[] {
    return [...this.secrets.values()];
  }

  /** n random characters of the alphabet for a new key. */
  randomChars(n: number): string {
    return this.random.chars(n);
  }
}

// The first 10 base32 characters carry 50 bits: they depend only on the first 7 bytes of the MAC.
const signature = (secret: Buffer, body: string) =>
  base32.stringify(createHmac("sha256", secret).update(body).digest().subarray(0, 7), { pad: false }).slice(0, 10);

/** A new key for `productCode`, signed with the keyring's current version. */
export function generateLicenseKey(productCode: string, keyring: LicenseKeyring): string {
  if (!PRODUCT_CODE_PATTERN.test(productCode))
    throw new Error(`product code ${JSON.stringify(productCode)}: must be 3 of A–Z0–9`);
  const version = keyring.currentVersion;
  const random = KEY_ALPHABET[version] + keyring.randomChars(24);
  const segments = [
    random.slice(0, 5),
    random.slice(5, 10),
    random.slice(10, 15),
    random.slice(15, 20),
    random.slice(20, 25),
  ];
  const body = `${productCode}-${segments.join("-")}`;
  const hmac = signature(keyring.secret(version)!, body);
  return `${body}-${hmac.slice(0, 5)}-${hmac.slice(5, 10)}`;
}

export type KeyCheck =
  | { ok: true; productCode: string; version: number }
  | { ok: false; code: "FORMAT_INVALID" | "SIGNATURE_INVALID" };

/**
 * Checks a key's format and HMAC without touching the database, as Vinzy's
 * `verify_hmac_multi` does: the secret of the key's own version, then every other secret,
 * because a pre-versioning key's first character is random and may name any version.
 * Every secret is tried and compared in constant time, so the time taken does not say
 * which one matched.
 */
export function checkLicenseKey(key: string, keyring: LicenseKeyring): KeyCheck {
  if (!KEY_PATTERN.test(key)) return { ok: false, code: "FORMAT_INVALID" };
  const body = key.slice(0, 33);
  const given = Buffer.from(key.slice(34, 39) + key.slice(40, 45));
  let matched = false;
  for (const secret of keyring.all()) matched = timingSafeEqual(Buffer.from(signature(secret, body)), given) || matched;
  return matched
    ? { ok: true, productCode: key.slice(0, 3), version: KEY_ALPHABET.indexOf(key[4]) }
    : { ok: false, code: "SIGNATURE_INVALID" };
}

/**
 * Accepts keys as people paste them: surrounding whitespace, and Vinzy keys in any case (custom keys are
 * case-sensitive).
 */
export function normalizeLicenseKey(key: string): string {
  const trimmed = key.trim();
  const upper = trimmed.toUpperCase();
  return KEY_PATTERN.test(upper) ? upper : trimmed;
}

/** A key of the vendor's own (not in the Vinzy format), as CreateLicense and imports accept it. */
export const CUSTOM_KEY_PATTERN = /^[A-Za-z0-9._-]{16,128}$/;

export type KeyLookup =
  | { ok: true; key: string; digest: Buffer }
  | { ok: false; code: "FORMAT_INVALID" | "SIGNATURE_INVALID" };

const verified = new WeakMap<LicenseKeyring, Map<string, { key: string; digest: Buffer }>>();

/**
 * How every credential-taking path reads a presented key: normalised, its format checked
 * (and its HMAC, for Vinzy keys) before any lookup, and the SHA-256 digest licenses are
 * found by. Keys that pass are remembered per keyring (bounded): the check is pure, so
 * its answer never changes, and hot paths (validation, heartbeats, usage batches) skip
 * the HMAC and the hash for a key they saw before.
 */
export function lookupLicenseKey(raw: string, keyring: LicenseKeyring): KeyLookup {
  let memo = verified.get(keyring);
  if (!memo) {
    memo = new Map();
    verified.set(keyring, memo);
  }
  const hit = memo.get(raw);
  if (hit) return { ok: true, ...hit };
  const key = normalizeLicenseKey(raw);
  if (KEY_PATTERN.test(key)) {
    const check = checkLicenseKey(key, keyring);
    if (!check.ok) return check;
  } else if (!CUSTOM_KEY_PATTERN.test(key)) {
    return { ok: false, code: "FORMAT_INVALID" };
  }
  const found = { key, digest: createHash("sha256").update(key).digest() };
  if (memo.size >= 50_000) memo.clear();
  memo.set(raw, found);
  return { ok: true, ...found };
}
