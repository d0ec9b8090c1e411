/*
 * Receiving licensd's webhooks: verifyWebhook checks a delivery the way the Standard
 * Webhooks specification (https://www.standardwebhooks.com) defines it (docs/formats.md,
 * "Webhook signatures"):
 *
 *   webhook-id         the event id (stable across retries: deduplicate on it)
 *   webhook-timestamp  Unix seconds when this attempt was signed
 *   webhook-signature  space-separated `v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`
 *
 * The key is the base64 after `whsec_` in the endpoint's secret. While a secret is being
 * rotated a delivery carries one signature per valid secret, and any one that matches
 * passes. Deliveries signed more than five minutes before or after `now` are refused
 * (replays). Pure: HMAC from @noble/hashes, no Node APIs, so it runs in every runtime.
 */
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { equalBytes, fromUtf8, utf8 } from "./bytes.js";
import { base64 } from "rfc4648";

/** Why a delivery was refused. */
export type WebhookFailure =
  /** webhook-id, webhook-timestamp or webhook-signature is absent or empty. */
  | "MISSING_HEADERS"
  /** The secret is not `whsec_` followed by base64 key bytes. */
  | "BAD_SECRET"
  /** webhook-timestamp is not a whole number of seconds, or the body is not JSON. */
  | "MALFORMED"
  /** Signed more than the tolerance before or after `now`. */
  | "TIMESTAMP_OUT_OF_TOLERANCE"
  /** No `v1` signature in webhook-signature matches this secret and body. */
  | "BAD_SIGNATURE";

export type WebhookVerification<E = unknown> =
  | { ok: true; id: string; timestamp: Date; event: E }
  | { ok: false; reason: WebhookFailure; message: string };

/** The request headers: a fetch `Headers`, or a plain object (Node's `req.headers`; names in any case). */
export type WebhookHeaders =
  | { get(name: string): string | null }
  | Record<string, string | readonly string[] | undefined>;

export interface VerifyWebhookOptions {
  /** The time to check webhook-timestamp against (tests); default the current time. */
  now?: Date | number;
  /** Allowed distance between webhook-timestamp and now, in seconds; default 300. */
  toleranceSeconds?: number;
}

/** Standard Webhooks' default tolerance: five minutes either way. */
export const WEBHOOK_TOLERANCE_SECONDS = 300;
const SECRET_PREFIX = "whsec_";

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (typeof headers.get === "function") return (headers as { get(n: string): string | null }).get(name) ?? undefined;
  const record = headers as Record<string, string | readonly string[] | undefined>;
  for (const [key, value] of Object.entries(record)) {
    if (key.toLowerCase() !== name) continue;
    // Repeated headers (Node gives an array): joined as one comma-free list of signatures.
    return typeof value === "string" ? value : value?.join(" ");
  }
  return undefined;
}

/** The key bytes of `whsec_<base64>`; undefined when the secret is not that. */
export function webhookSecretKey(secret: string): Uint8Array | undefined {
  if (!secret.startsWith(SECRET_PREFIX)) return undefined;
  try {
    const key = base64.parse(secret.slice(SECRET_PREFIX.length), { loose: true });
    return key.length > 0 ? key : undefined;
  } catch {
    return undefined;
  }
}

/** The v1 signature (raw HMAC bytes) of one delivery under one key. */
export function webhookSignature(
  key: Uint8Array,
  id: string,
  timestamp: number | string,
  body: Uint8Array,
): Uint8Array {
  const prefix = utf8(`${id}.${timestamp}.`);
  const message = new Uint8Array(prefix.length + body.length);
  message.set(prefix);
  message.set(body, prefix.length);
  return hmac(sha256, key, message);
}

/**
 * Checks one delivery: `payload` is the raw request body, exactly as received (parse it
 * only after this passes: re-serialized JSON does not verify), `headers` the request's
 * headers, `secret` the endpoint's `whsec_…` secret. Never throws: a refusal is
 * `{ ok: false, reason }`; on success `event` is the parsed body (`{ type, timestamp, data }`).
 */
export function verifyWebhook<E = unknown>(
  payload: string | Uint8Array,
  headers: WebhookHeaders,
  secret: string,
  options: VerifyWebhookOptions = {},
): WebhookVerification<E> {
  const fail = (reason: WebhookFailure, message: string): WebhookVerification<E> => ({ ok: false, reason, message });
  const id = header(headers, "webhook-id")?.trim();
  const stamp = header(headers, "webhook-timestamp")?.trim();
  const signatures = header(headers, "webhook-signature")?.trim();
  if (!id || !stamp || !signatures)
    return fail("MISSING_HEADERS", "webhook-id, webhook-timestamp and webhook-signature are required");
  const key = webhookSecretKey(secret);
  if (!key) return fail("BAD_SECRET", "the secret is not whsec_ followed by base64 key bytes");
  if (!/^\d{1,15}$/.test(stamp)) return fail("MALFORMED", "webhook-timestamp is not a number of seconds");
  const seconds = Number(stamp);
  const now = options.now === undefined ? Date.now() : Number(options.now);
  const tolerance = options.toleranceSeconds ?? WEBHOOK_TOLERANCE_SECONDS;
  const nowSeconds = Math.floor(now / 1000);
  if (seconds < nowSeconds - tolerance) return fail("TIMESTAMP_OUT_OF_TOLERANCE", "the delivery is too old");
  if (seconds > nowSeconds + tolerance) return fail("TIMESTAMP_OUT_OF_TOLERANCE", "the delivery is in the future");

  const body = typeof payload === "string" ? utf8(payload) : payload;
  const expected = webhookSignature(key, id, stamp, body);
  let matched = false;
  for (const entry of signatures.split(" ")) {
    const comma = entry.indexOf(",");
    // Other versions (v1a, …) and junk are skipped: a signature this receiver cannot check is not a match.
    if (comma < 0 || entry.slice(0, comma) !== "v1") continue;
    let given: Uint8Array;
    try {
      given = base64.parse(entry.slice(comma + 1), { loose: true });
    } catch {
      continue;
    }
    // Every candidate compared (no early exit), each in constant time.
    if (equalBytes(given, expected)) matched = true;
  }
  if (!matched) return fail("BAD_SIGNATURE", "no v1 signature matches this secret and body");

  let event: E;
  try {
    event = JSON.parse(fromUtf8(body)) as E;
  } catch {
    return fail("MALFORMED", "the body is not UTF-8 JSON");
  }
  return { ok: true, id, timestamp: new Date(seconds * 1000), event };
}
