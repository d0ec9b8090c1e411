import { sha256 } from "../platform/crypto.js";
import { normalizeLicenseKey } from "../licensing/license-key.js";

/**
 * Calls authenticated by a license key are scoped (rate buckets, idempotency) by the digest of the key as licenses are
 * found by it, however it was typed.
 */
export const keyScope = (key: string) => `key:${sha256(normalizeLicenseKey(key)).toString("hex").slice(0, 32)}`;
