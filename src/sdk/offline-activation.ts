/*
 * Air-gapped activation files, on the machine that cannot reach licensd: it writes a
 * request file (the format is the server's, activation/offline-request.ts) and verifies
 * the response file (an offline lease) that comes back.
 */
import { randomBytes } from "node:crypto";
import {
  licenseKeyDigest,
  REQUEST_PREFIX,
  requestMac,
  type OfflineActivationRequest,
} from "../activation/offline-request.js";
import { verifyLease, type LeaseCheck } from "../licensing/lease-verify.js";

export {
  checkOfflineActivationRequest,
  licenseKeyDigest,
  parseOfflineActivationRequest,
  REQUEST_PREFIX,
  type OfflineActivationRequest,
} from "../activation/offline-request.js";

const b64 = (data: Buffer | string) => Buffer.from(data).toString("base64url");

/** Writes the request file's content for this machine. */
export function createOfflineActivationRequest(opts: {
  key: string;
  fingerprint: string;
  hostname?: string;
  platform?: string;
  cores?: number;
  now?: Date;
}): string {
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
  return `${input}.${b64(requestMac(opts.key, input))}`;
}

/** Verifies a response file (an offline lease) on the machine that asked for it; never throws. */
export function verifyOfflineActivationResponse(
  text: string,
  keys: { kid: string; publicKey: Uint8Array }[],
  opts: { fingerprint: string; now?: Date },
): LeaseCheck {
  return verifyLease(text.trim(), keys, opts);
}
