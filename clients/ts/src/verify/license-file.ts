/*
 * Offline verification of license files (docs/formats.md, "License files"):
 *
 *   licensd1.<base64url(payload JSON)>.<base64url(Ed25519 signature)>
 *   licensd1h.<base64url(payload JSON)>.<base64url(HMAC-SHA256)>          shared secret
 *   licensd1e.<base64url(IV)>.<base64url(AES-256-GCM ciphertext ‖ tag)>    encrypted
 *
 * Never throws: every failure is a result with a code, so an application can gate
 * features with `hasFeature()` and fall back to its free tier. Fail-safe: an expiry that
 * cannot be read counts as past.
 */
import { gcm } from "@noble/ciphers/aes.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { equalBytes, fromBase64Url, fromUtf8, utf8 } from "./bytes.js";
import { verifyEd25519 } from "./ed25519.js";
import { hasKeys, lookupKey, type Keys } from "./keys.js";
import { normalizeLicenseKey } from "./license-key.js";

const ED25519_PREFIX = "licensd1";
const HMAC_PREFIX = "licensd1h";
const ENCRYPTED_PREFIX = "licensd1e";

export type LicenseFileCode =
  | "VALID"
  | "MALFORMED"
  | "UNKNOWN_KEY"
  /** The keys come from a KeySource (SigningKeys) that could not load any: try again later. */
  | "KEYS_UNAVAILABLE"
  | "BAD_SIGNATURE"
  | "HMAC_NOT_ALLOWED"
  | "DECRYPTION_FAILED"
  | "EXPIRED"
  | "FINGERPRINT_MISMATCH";

export type Entitlement = boolean | number | string;

/** What a license file says (docs/formats.md, "Payload"). */
export interface LicenseFilePayload {
  v: 1;
  license_id: string;
  tenant_id: string;
  product: { code: string; name: string };
  customer: { name: string; email: string; organization: string };
  plan: string;
  features: string[];
  entitlements: Record<string, Entitlement>;
  agents: Record<string, { enabled: boolean; token_limit: number; model_tier: string | null }>;
  max_machines: number;
  max_users: number;
  /** ISO time. */
  issued_at: string;
  /** ISO time, or null for perpetual. */
  expires_at: string | null;
  kid: string;
  /** Only in a file bound to one machine. */
  fingerprint?: string;
}

export interface LicenseFileResult {
  valid: boolean;
  code: LicenseFileCode;
  /** The payload as read, once it parsed (also when a later check failed: show it, don't trust it). */
  payload?: LicenseFilePayload;
  /** True only when the file is valid and grants `feature`. */
  hasFeature(feature: string): boolean;
}

export interface VerifyLicenseFileOptions {
  /** The published Ed25519 keys (ActivationService.GetSigningKeys), pinned or through SigningKeys. */
  keys?: Keys;
  /** The shared secret, for `licensd1h.` files. */
  hmacSecret?: string;
  /** Accept `licensd1h.` files although Ed25519 keys are given (off: a leaked secret must not mint files). */
  allowHmac?: boolean;
  /** The license key, to open encrypted (`licensd1e.`) files; as typed is fine. */
  licenseKey?: string;
  /** This machine's fingerprint: a file bound to another machine fails. */
  fingerprint?: string;
  /** Defaults to the current time. */
  now?: Date;
}

const result = (code: LicenseFileCode, payload?: LicenseFilePayload): LicenseFileResult => {
  const valid = code === "VALID";
  const features = valid && Array.isArray(payload?.features) ? payload.features : [];
  return { valid, code, payload, hasFeature: (f) => features.includes(f) };
};

/** The signed file inside an encrypted one, or undefined when the key is wrong or the file altered. */
function decrypt(text: string, licenseKey: string): string | undefined {
  const parts = text.split(".");
  if (parts.length !== 3 || parts[0] !== ENCRYPTED_PREFIX) return undefined;
  const iv = fromBase64Url(parts[1]!);
  const body = fromBase64Url(parts[2]!);
  if (iv?.length !== 12 || !body || body.length < 16) return undefined;
  try {
    const key = hkdf(sha256, utf8(normalizeLicenseKey(licenseKey)), utf8(ENCRYPTED_PREFIX), utf8("license file"), 32);
    return fromUtf8(gcm(key, iv, utf8(ENCRYPTED_PREFIX)).decrypt(body));
  } catch {
    return undefined;
  }
}

/** The checks license files and leases share: envelope, signature, expiry and fingerprint. */
export async function verifyEnvelope(file: unknown, opts: VerifyLicenseFileOptions): Promise<LicenseFileResult> {
  if (typeof file !== "string") return result("MALFORMED");
  let text = file.trim();
  if (text.startsWith(`${ENCRYPTED_PREFIX}.`)) {
    const plain = typeof opts.licenseKey === "string" ? decrypt(text, opts.licenseKey) : undefined;
    if (plain === undefined) return result("DECRYPTION_FAILED");
    text = plain;
  }
  const parts = text.split(".");
  if (parts.length !== 3 || (parts[0] !== ED25519_PREFIX && parts[0] !== HMAC_PREFIX)) return result("MALFORMED");
  const [prefix, body, sig] = parts as [string, string, string];
  let payload: LicenseFilePayload;
  try {
    const bytes = fromBase64Url(body);
    if (!bytes) return result("MALFORMED");
    payload = JSON.parse(fromUtf8(bytes)) as LicenseFilePayload;
  } catch {
    return result("MALFORMED");
  }
  if (
    typeof payload !== "object" ||
    payload === null ||
    Array.isArray(payload) ||
    payload.v !== 1 ||
    typeof payload.kid !== "string" ||
    !Array.isArray(payload.features)
  )
    return result("MALFORMED");
  const signingInput = utf8(`${prefix}.${body}`);
  // A signature that is not base64url cannot be the right one.
  const signature = fromBase64Url(sig) ?? new Uint8Array(0);
  if (prefix === HMAC_PREFIX) {
    if (hasKeys(opts.keys) && !opts.allowHmac) return result("HMAC_NOT_ALLOWED", payload);
    if (typeof opts.hmacSecret !== "string" || !opts.hmacSecret) return result("UNKNOWN_KEY", payload);
    if (!equalBytes(signature, hmac(sha256, utf8(opts.hmacSecret), signingInput)))
      return result("BAD_SIGNATURE", payload);
  } else {
    const found = await lookupKey(opts.keys, payload.kid);
    if (!found.ok) return result(found.code, payload);
    if (!(await verifyEd25519(found.key.publicKey, signingInput, signature))) return result("BAD_SIGNATURE", payload);
  }
  if (payload.expires_at !== null) {
    const expires = typeof payload.expires_at === "string" ? Date.parse(payload.expires_at) : Number.NaN;
    const now = opts.now instanceof Date ? opts.now.getTime() : Date.now();
    // Fail safe: an unreadable expiry, or clock, counts as past.
    if (!Number.isFinite(expires) || !(expires > now)) return result("EXPIRED", payload);
  }
  if (payload.fingerprint !== undefined && payload.fingerprint !== opts.fingerprint)
    return result("FINGERPRINT_MISMATCH", payload);
  return result("VALID", payload);
}

/**
 * Verifies a license file (the text of the file; surrounding white space is ignored).
 * Async because Ed25519 goes through WebCrypto; the promise never rejects.
 */
export async function verifyLicenseFile(file: string, opts: VerifyLicenseFileOptions = {}): Promise<LicenseFileResult> {
  const r = await verifyEnvelope(file, opts ?? {});
  // Leases share the envelope and carry a `typ`: a lease is not a license file.
  return r.payload && (r.payload as { typ?: unknown }).typ !== undefined ? result("MALFORMED", r.payload) : r;
}
