/*
 * Air-gapped activation request files, as the server reads them.
 *
 *   licensd-req1.<base64url(JSON request)>.<base64url(HMAC-SHA256(license key, "licensd-req1.<payload>"))>
 *
 * The machine that cannot reach licensd writes a request file; someone carries it to
 * the vendor, who uploads it with ActivateOffline and carries the response (a lease
 * bound to the machine's fingerprint) back. The request names the license by the
 * SHA-256 of its key — the key itself never leaves the machine — and the HMAC under the
 * key proves the file was written by a holder of the key and not altered on the way.
 * Machines write request files with @licensd/client (clients/ts/src/verify/offline-activation.ts).
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { normalizeLicenseKey } from "../licensing/license-key.js";

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

/** HMAC-SHA256 under the normalized license key: what a request file is MACed with. */
export const requestMac = (key: string, input: string) =>
  createHmac("sha256", normalizeLicenseKey(key)).update(input).digest();

/** The SHA-256 of a license key as licensd stores it (what a request file names the license by). */
export const licenseKeyDigest = (key: string) => createHash("sha256").update(normalizeLicenseKey(key)).digest();

/** Reads a request file without checking its MAC (the server needs the digest to find the key first). */
export function parseOfflineActivationRequest(
  text: string,
): { request: OfflineActivationRequest; signingInput: string; mac: Buffer } | undefined {
  const parts = text.trim().split(".");
  if (parts.length !== 3 || parts[0] !== REQUEST_PREFIX) return undefined;
  try {
    const request = JSON.parse(Buffer.from(parts[1]!, "base64url").toString("utf8")) as OfflineActivationRequest;
    if (
      request?.v !== 1 ||
      request.typ !== "activation_request" ||
      typeof request.key_digest !== "string" ||
      typeof request.fingerprint !== "string"
    )
      return undefined;
    if (
      typeof request.hostname !== "string" ||
      typeof request.platform !== "string" ||
      !Number.isInteger(request.cores) ||
      typeof request.created_at !== "string"
    )
      return undefined;
    return { request, signingInput: `${parts[0]}.${parts[1]}`, mac: Buffer.from(parts[2]!, "base64url") };
  } catch {
    return undefined;
  }
}

/** Whether the request's MAC was made with this license key. */
export function checkOfflineActivationRequest(parsed: { signingInput: string; mac: Buffer }, key: string): boolean {
  const expected = requestMac(key, parsed.signingInput);
  return parsed.mac.length === expected.length && timingSafeEqual(parsed.mac, expected);
}
