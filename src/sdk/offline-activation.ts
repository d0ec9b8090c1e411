/*
 * Air-gapped activation files.
 *
 *   licensd-req1.<base64url(JSON request)>.<base64url(HMAC-SHA256(license key, "licensd-req1.<payload>"))>
 *
 * The machine that cannot reach licensd writes a request file; someone carries it to
 * the vendor, who uploads it with ActivateOffline and carries the response (a lease
 * bound to the machine's fingerprint) back. The request names the license by the
 * SHA-256 of its key — the key itself never leaves the machine — and the HMAC under the
 * key proves the file was written by a holder of the key and not altered on the way.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { normalizeLicenseKey } from "../licensing/license-key.js";
import { verifyLease, type LeaseCheck } from "./lease.js";

export const REQUEST_PREFIX = "licensd-req1";

export interface OfflineActivationRequest {
  v: 1;
  typ: "activation_request";
  /** base64url SHA-256 of the normalized license key. */
  key_digest: string;
  fingerprint: string;
  hostname: string;
  platform: string;
  cores: number;
  /** RFC 3339. */
  created_at: string;
  nonce: string;
}

const b64 = (data: Buffer | string) => Buffer.from(data).toString("base64url");
const mac = (key: string, input: string) => createHmac("sha256", normalizeLicenseKey(key)).update(input).digest();

/** The SHA-256 of a license key as licensd stores it (what a request file names the license by). */
export const licenseKeyDigest = (key: string) => createHash("sha256").update(normalizeLicenseKey(key)).digest();

/** Writes the request file's content for this machine. */
export function createOfflineActivationRequest(opts: { key: string; fingerprint: string; hostname?: string; platform?: string; cores?: number; now?: Date }): string {
  if (!opts.fingerprint || opts.fingerprint.length > 255) throw new Error("fingerprint: must be 1 to 255 characters");
  const request: OfflineActivationRequest = {
    v: 1,
    typ: "activation_request",
    key_digest: b64(licenseKeyDigest(opts.key)),
    fingerprint: opts.fingerprint,
    hostname: opts.hostname ?? "",
    platform: opts.platform ?? "",
    cores: opts.cores ?? 0,
    created_at: (opts.now ?? new Date()).toISOString(),
    nonce: b64(randomBytes(12)),
  };
  const input = `${REQUEST_PREFIX}.${b64(JSON.stringify(request))}`;
  return `${input}.${b64(mac(opts.key, input))}`;
}

/** Reads a request file without checking its MAC (the server needs the digest to find the key first). */
export function parseOfflineActivationRequest(text: string): { request: OfflineActivationRequest; signingInput: string; mac: Buffer } | undefined {
  const parts = text.trim().split(".");
  if (parts.length !== 3 || parts[0] !== REQUEST_PREFIX) return undefined;
  try {
    const request = JSON.parse(Buffer.from(parts[1]!, "base64url").toString("utf8")) as OfflineActivationRequest;
    if (request?.v !== 1 || request.typ !== "activation_request" || typeof request.key_digest !== "string" || typeof request.fingerprint !== "string") return undefined;
    if (typeof request.hostname !== "string" || typeof request.platform !== "string" || !Number.isInteger(request.cores) || typeof request.created_at !== "string") return undefined;
    return { request, signingInput: `${parts[0]}.${parts[1]}`, mac: Buffer.from(parts[2]!, "base64url") };
  } catch {
    return undefined;
  }
}

/** Whether the request's MAC was made with this license key. */
export function checkOfflineActivationRequest(parsed: { signingInput: string; mac: Buffer }, key: string): boolean {
  const expected = mac(key, parsed.signingInput);
  return parsed.mac.length === expected.length && timingSafeEqual(parsed.mac, expected);
}

/** Verifies a response file (an offline lease) on the machine that asked for it; never throws. */
export function verifyOfflineActivationResponse(text: string, keys: { kid: string; publicKey: Uint8Array }[], opts: { fingerprint: string; now?: Date }): LeaseCheck {
  return verifyLease(text.trim(), keys, opts);
}
