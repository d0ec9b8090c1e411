import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * HMAC-SHA256 keys that sign audit entries, by kid. The newest signs; every key
 * verifies, so keys rotate without re-signing history. Without LICENSD_AUDIT_HMAC_KEYS
 * the one key is `dk1`, derived from the data key once and stored (platform/data-key-material.ts).
 */
export class AuditKeyring {
  private readonly keys = new Map<string, Buffer>();
  readonly currentKid: string;

  /** `dk1`: the data-key material's audit HMAC key; `configured`: LICENSD_AUDIT_HMAC_KEYS. */
  constructor(dk1: Buffer, configured: Record<string, Buffer> = {}) {
    this.keys.set("dk1", dk1);
    for (const [kid, key] of Object.entries(configured)) this.keys.set(kid, key);
    this.currentKid = [...this.keys.keys()].at(-1)!;
  }

  sign(hash: Uint8Array): { kid: string; signature: Buffer } {
    return {
      kid: this.currentKid,
      signature: createHmac("sha256", this.keys.get(this.currentKid)!).update(hash).digest(),
    };
  }

  verify(kid: string, hash: Uint8Array, signature: Uint8Array): boolean {
    const key = this.keys.get(kid);
    if (!key || signature.length !== 32) return false;
    return timingSafeEqual(createHmac("sha256", key).update(hash).digest(), signature);
  }
}
