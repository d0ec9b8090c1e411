import { createHmac, randomBytes } from "node:crypto";

/** `whsec_` + the base64 of 32 random bytes (the Standard Webhooks secret format). */
export const SECRET_PREFIX = "whsec_";

export function newSecret(): { text: string; bytes: Buffer } {
  const bytes = randomBytes(32);
  return { text: SECRET_PREFIX + bytes.toString("base64"), bytes };
}

export const secretText = (bytes: Buffer) => SECRET_PREFIX + bytes.toString("base64");

/**
 * The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` per
 * secret, space-separated (docs/formats.md, "Webhook signatures").
 */
export function signatureHeader(id: string, timestamp: number, body: string, secrets: readonly Buffer[]): string {
  return secrets
    .map((key) => `v1,${createHmac("sha256", key).update(`${id}.${timestamp}.${body}`).digest("base64")}`)
    .join(" ");
}
