/*
 * Air-gapped activation files (docs/formats.md, "Air-gapped activation files"), on the
 * machine that cannot reach licensd: it writes a request file, and verifies the response
 * file (an offline lease) that comes back.
 *
 *   licensd-req1.<base64url(request JSON)>.<base64url(HMAC-SHA256(normalised key, "licensd-req1.<payload>"))>
 */
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { equalBytes, fromBase64Url, fromUtf8, toBase64Url, utf8 } from "./bytes.js";
import type { Keys } from "./keys.js";
import { verifyLease, type LeaseCheck, type VerifyLeaseOptions } from "./lease.js";
import { normalizeLicenseKey } from "./license-key.js";

const REQUEST_PREFIX = "licensd-req1";

/** The request JSON of a request file. */
export interface OfflineActivationRequest {
  v: 1;
  typ: "activation_request";
  /** base64url SHA-256 of the normalised license key: names the license without revealing the key. */
  key_digest: string;
  fingerprint: string;
  hostname: string;
  platform: string;
  cores: number;
  /** ISO time. */
  created_at: string;
  /** base64url of 12 random bytes. */
  nonce: string;
}

export interface CreateOfflineActivationRequestOptions {
  /** The license key, as typed. */
  key: string;
  /** This machine's fingerprint, 1 to 255 characters. */
  fingerprint: string;
  hostname?: string;
  platform?: string;
  cores?: number;
  now?: Date;
  /** 12 bytes; defaults to crypto.getRandomValues. Only for reproducible output (test vectors). */
  nonce?: Uint8Array;
}

/** SHA-256 of the normalised license key: what licensd finds a license by. Synchronous. */
export const licenseKeyDigest = (key: string): Uint8Array => sha256(utf8(normalizeLicenseKey(key)));

const requestMac = (key: string, input: string) => hmac(sha256, utf8(normalizeLicenseKey(key)), utf8(input));

/** Writes the request file's content for this machine. Synchronous; throws a TypeError on bad options. */
export function createOfflineActivationRequest(opts: CreateOfflineActivationRequestOptions): string {
  if (typeof opts?.key !== "string" || !opts.key.trim()) throw new TypeError("key: a license key is required");
  if (typeof opts.fingerprint !== "string" || !opts.fingerprint || opts.fingerprint.length > 255)
    throw new TypeError("fingerprint: must be 1 to 255 characters");
  const cores = opts.cores ?? 0;
  if (!Number.isInteger(cores) || cores < 0) throw new TypeError("cores: must be a whole number ≥ 0");
  const nonce = opts.nonce ?? globalThis.crypto.getRandomValues(new Uint8Array(12));
  if (nonce.length !== 12) throw new TypeError("nonce: must be 12 bytes");
  const request: OfflineActivationRequest = {
    v: 1,
    typ: "activation_request",
    key_digest: toBase64Url(licenseKeyDigest(opts.key)),
    fingerprint: opts.fingerprint,
    hostname: opts.hostname ?? "",
    platform: opts.platform ?? "",
    cores,
    created_at: (opts.now ?? new Date()).toISOString(),
    nonce: toBase64Url(nonce),
  };
  const input = `${REQUEST_PREFIX}.${toBase64Url(utf8(JSON.stringify(request)))}`;
  return `${input}.${toBase64Url(requestMac(opts.key, input))}`;
}

export interface ParsedOfflineActivationRequest {
  request: OfflineActivationRequest;
  /** The text the MAC covers. */
  signingInput: string;
  mac: Uint8Array;
}

/** Reads a request file without checking its MAC; undefined when it is not one. */
export function parseOfflineActivationRequest(text: unknown): ParsedOfflineActivationRequest | undefined {
  if (typeof text !== "string") return undefined;
  const parts = text.trim().split(".");
  if (parts.length !== 3 || parts[0] !== REQUEST_PREFIX) return undefined;
  const body = fromBase64Url(parts[1]!);
  const mac = fromBase64Url(parts[2]!);
  if (!body || !mac) return undefined;
  let request: OfflineActivationRequest;
  try {
    request = JSON.parse(fromUtf8(body)) as OfflineActivationRequest;
  } catch {
    return undefined;
  }
  if (
    typeof request !== "object" ||
    request === null ||
    request.v !== 1 ||
    request.typ !== "activation_request" ||
    typeof request.key_digest !== "string" ||
    typeof request.fingerprint !== "string" ||
    typeof request.hostname !== "string" ||
    typeof request.platform !== "string" ||
    !Number.isInteger(request.cores) ||
    typeof request.created_at !== "string"
  )
    return undefined;
  return { request, signingInput: `${parts[0]}.${parts[1]}`, mac };
}

/** Whether the request's MAC was made with this license key (as typed). */
export const checkOfflineActivationRequest = (parsed: ParsedOfflineActivationRequest, key: string): boolean =>
  equalBytes(parsed.mac, requestMac(key, parsed.signingInput));

/** Verifies a response file (an offline lease) on the machine that asked for it; the promise never rejects. */
export function verifyOfflineActivationResponse(
  text: string,
  keys: Keys,
  opts: VerifyLeaseOptions,
): Promise<LeaseCheck> {
  return verifyLease(typeof text === "string" ? text.trim() : text, keys, opts);
}
