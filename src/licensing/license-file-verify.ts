/*
 * Offline verification of licensd license files (see license-file.ts for the format): the
 * server checks leases with it (usage events may carry one), and the SDK re-exports it. Never throws: every failure is
 * a result with a code, so an application can gate features with `hasFeature()` and fall back to its free tier
 * (PocketPaw's "never throws" LicenseInfo). Fail-safe: an unparseable date counts as expired.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { verifyEd25519 } from "../platform/signing-keys.js";
import {
  decryptLicenseFile,
  ED25519_PREFIX,
  ENCRYPTED_PREFIX,
  HMAC_PREFIX,
  type LicenseFilePayload,
} from "./license-file.js";

export type LicenseFileCode =
  | "VALID"
  | "MALFORMED"
  | "UNKNOWN_KEY"
  | "BAD_SIGNATURE"
  | "HMAC_NOT_ALLOWED"
  | "DECRYPTION_FAILED"
  | "EXPIRED"
  | "FINGERPRINT_MISMATCH";

export interface LicenseFileResult {
  valid: boolean;
  code: LicenseFileCode;
  payload?: LicenseFilePayload;
  hasFeature(feature: string): boolean;
}

export interface VerifyOptions {
  /** Published Ed25519 keys (ActivationService.GetSigningKeys), by kid. */
  keys?: { kid: string; publicKey: Uint8Array }[];
  /** The shared secret, for `licensd1h.` files. */
  hmacSecret?: string;
  /**
   * Accept `licensd1h.` files even though Ed25519 keys are configured (off by default: a leaked shared secret must not
   * mint files).
   */
  allowHmac?: boolean;
  /** The license key, to open encrypted (`licensd1e.`) files. */
  licenseKey?: string;
  /** This machine's fingerprint: a file bound to another machine fails. */
  fingerprint?: string;
  now?: Date;
}

const result = (code: LicenseFileCode, payload?: LicenseFilePayload): LicenseFileResult => {
  const valid = code === "VALID";
  return { valid, code, payload, hasFeature: (f) => valid && !!payload?.features.includes(f) };
};

/** Verifies a license file; a signed payload with a `typ` (a lease) is not one, and is MALFORMED. */
export function verifyLicenseFile(file: string, opts: VerifyOptions): LicenseFileResult {
  const r = verifyEnvelope(file, opts);
  return r.payload && (r.payload as { typ?: unknown }).typ !== undefined ? result("MALFORMED", r.payload) : r;
}

/** The checks license files and leases share: the envelope, its signature, expiry and fingerprint. */
export function verifyEnvelope(file: string, opts: VerifyOptions): LicenseFileResult {
  let text = file.trim();
  if (text.startsWith(`${ENCRYPTED_PREFIX}.`)) {
    if (!opts.licenseKey) return result("DECRYPTION_FAILED");
    try {
      text = decryptLicenseFile(text, opts.licenseKey);
    } catch {
      return result("DECRYPTION_FAILED");
    }
  }
  const parts = text.split(".");
  if (parts.length !== 3 || (parts[0] !== ED25519_PREFIX && parts[0] !== HMAC_PREFIX)) return result("MALFORMED");
  let payload: LicenseFilePayload;
  try {
    payload = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8")) as LicenseFilePayload;
    if (payload?.v !== 1 || typeof payload.kid !== "string" || !Array.isArray(payload.features))
      return result("MALFORMED");
  } catch {
    return result("MALFORMED");
  }
  const signingInput = Buffer.from(`${parts[0]}.${parts[1]}`);
  const signature = Buffer.from(parts[2], "base64url");
  if (parts[0] === HMAC_PREFIX) {
    if ((opts.keys?.length ?? 0) > 0 && !opts.allowHmac) return result("HMAC_NOT_ALLOWED", payload);
    if (!opts.hmacSecret) return result("UNKNOWN_KEY", payload);
    const expected = createHmac("sha256", opts.hmacSecret).update(signingInput).digest();
    if (signature.length !== expected.length || !timingSafeEqual(signature, expected))
      return result("BAD_SIGNATURE", payload);
  } else {
    const key = opts.keys?.find((k) => k.kid === payload.kid);
    if (!key) return result("UNKNOWN_KEY", payload);
    if (!verifyEd25519(key.publicKey, signingInput, signature)) return result("BAD_SIGNATURE", payload);
  }
  if (payload.expires_at !== null) {
    const expires = typeof payload.expires_at === "string" ? Date.parse(payload.expires_at) : Number.NaN;
    if (!Number.isFinite(expires) || expires <= (opts.now ?? new Date()).getTime()) return result("EXPIRED", payload);
  }
  if (payload.fingerprint !== undefined && payload.fingerprint !== opts.fingerprint)
    return result("FINGERPRINT_MISMATCH", payload);
  return result("VALID", payload);
}
