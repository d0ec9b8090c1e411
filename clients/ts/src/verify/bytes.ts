/*
 * Byte helpers that work the same in every runtime (no Node Buffer): UTF-8 through
 * TextEncoder/TextDecoder, base64 and base64url through rfc4648.
 */
import { base64, base64url } from "rfc4648";

const encoder = new TextEncoder();
// Fatal: a payload that is not UTF-8 is malformed, not silently repaired.
const decoder = new TextDecoder("utf-8", { fatal: true });

export const utf8 = (text: string): Uint8Array => encoder.encode(text);

/** Decodes UTF-8; throws on invalid bytes. */
export const fromUtf8 = (bytes: Uint8Array): string => decoder.decode(bytes);

/** Unpadded base64url (RFC 4648 §5), as licensd's tokens write it. */
export const toBase64Url = (bytes: Uint8Array): string => base64url.stringify(bytes, { pad: false });

/** base64url with or without padding; undefined when the text is not base64url. */
export function fromBase64Url(text: string): Uint8Array | undefined {
  try {
    return base64url.parse(text, { loose: true });
  } catch {
    return undefined;
  }
}

/** Padded base64 (RFC 4648 §4), as proto3 JSON and checkpoints write bytes. */
export const toBase64 = (bytes: Uint8Array): string => base64.stringify(bytes);

/** proto3 JSON bytes: protobuf's JSON parsers take standard or URL-safe base64, padded or not. */
export function fromBase64(text: string): Uint8Array | undefined {
  try {
    return /[-_]/.test(text) ? base64url.parse(text, { loose: true }) : base64.parse(text, { loose: true });
  } catch {
    return undefined;
  }
}

export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

/** Compares in time that depends only on the lengths, for MACs. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
