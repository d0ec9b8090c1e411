import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from "node:crypto";

export const sha256 = (data: string | Buffer): Buffer => createHash("sha256").update(data).digest();

/** Constant-time equality of two secrets, whatever their lengths. */
export function secretsEqual(a: string, b: string): boolean {
  return timingSafeEqual(sha256(a), sha256(b));
}

/** A random secret as unpadded base64url: `bytes` of entropy. */
export const randomSecret = (bytes = 32): string => randomBytes(bytes).toString("base64url");

/**
 * AES-256-GCM under the data key, for secrets licensd must give back later (license
 * keys for re-delivery, webhook secrets, signing keys). Layout: iv(12) | tag(16) | ciphertext.
 */
export function seal(dataKey: Buffer, plaintext: Buffer, aad = ""): Buffer {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", dataKey, iv);
  cipher.setAAD(Buffer.from(aad));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]);
}

export function open(dataKey: Buffer, sealed: Buffer, aad = ""): Buffer {
  const decipher = createDecipheriv("aes-256-gcm", dataKey, sealed.subarray(0, 12));
  decipher.setAAD(Buffer.from(aad));
  decipher.setAuthTag(sealed.subarray(12, 28));
  return Buffer.concat([decipher.update(sealed.subarray(28)), decipher.final()]);
}
