import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from "node:crypto";
import { normalizeLicenseKey } from "./license-key.js";

/*
 * Offline license files, after HenKaiPan, DataTools and PocketPaw, done properly:
 *
 *   licensd1.<base64url(JSON payload)>.<base64url(Ed25519 signature)>
 *   licensd1h.<base64url(JSON payload)>.<base64url(HMAC-SHA256)>        shared-secret variant
 *   licensd1e.<base64url(12-byte IV)>.<base64url(AES-256-GCM ciphertext ‖ tag)>  encrypted
 *
 * The signature covers the ASCII text before the last dot ("licensd1.<payload>"). An
 * encrypted file holds a signed one; its key is HKDF-SHA256(license key, "licensd1e",
 * "license file"), so only the holder of the license key can open it. The key is
 * normalised first (as stored: Vinzy keys upper-cased), so it opens with the key as typed.
 * Byte layouts: docs/formats.md.
 */

export const ED25519_PREFIX = "licensd1";
export const HMAC_PREFIX = "licensd1h";
export const ENCRYPTED_PREFIX = "licensd1e";

export interface LicenseFilePayload {
  v: 1;
  license_id: string;
  tenant_id: string;
  product: { code: string; name: string };
  customer: { name: string; email: string; organization: string };
  plan: string;
  features: string[];
  entitlements: Record<string, boolean | number | string>;
  agents: Record<string, { enabled: boolean; token_limit: number; model_tier: string | null }>;
  max_machines: number;
  max_users: number;
  /** RFC 3339. */
  issued_at: string;
  /** RFC 3339, or null for perpetual. */
  expires_at: string | null;
  kid: string;
  /** Set when the file is bound to one machine. */
  fingerprint?: string;
}

const b64 = (data: Buffer | string) => Buffer.from(data).toString("base64url");

export function encodeLicenseFile(
  prefix: string,
  payload: LicenseFilePayload,
  sign: (signingInput: Buffer) => Buffer,
): string {
  const signingInput = `${prefix}.${b64(JSON.stringify(payload))}`;
  return `${signingInput}.${b64(sign(Buffer.from(signingInput)))}`;
}

export const hmacLicenseFile = (secret: string) => (input: Buffer) =>
  createHmac("sha256", secret).update(input).digest();

function fileKey(licenseKey: string): Buffer {
  return Buffer.from(
    hkdfSync("sha256", Buffer.from(normalizeLicenseKey(licenseKey)), Buffer.from(ENCRYPTED_PREFIX), "license file", 32),
  );
}

export function encryptLicenseFile(file: string, licenseKey: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", fileKey(licenseKey), iv);
  cipher.setAAD(Buffer.from(ENCRYPTED_PREFIX));
  const body = Buffer.concat([cipher.update(file, "utf8"), cipher.final(), cipher.getAuthTag()]);
  return `${ENCRYPTED_PREFIX}.${b64(iv)}.${b64(body)}`;
}

/** The signed file inside an encrypted one; throws when the key is wrong or the file was altered. */
export function decryptLicenseFile(file: string, licenseKey: string): string {
  const [prefix, ivText, bodyText, extra] = file.trim().split(".");
  if (prefix !== ENCRYPTED_PREFIX || !ivText || !bodyText || extra !== undefined)
    throw new Error("not an encrypted license file");
  const body = Buffer.from(bodyText, "base64url");
  const decipher = createDecipheriv("aes-256-gcm", fileKey(licenseKey), Buffer.from(ivText, "base64url"));
  decipher.setAAD(Buffer.from(ENCRYPTED_PREFIX));
  decipher.setAuthTag(body.subarray(body.length - 16));
  return Buffer.concat([decipher.update(body.subarray(0, body.length - 16)), decipher.final()]).toString("utf8");
}
