/*
 * The Ed25519 public keys verifiers check signatures with: a fixed list (pinned in the
 * product, or fetched by the caller), or a KeySource such as SigningKeys, which fetches
 * them from licensd and follows rotations.
 */

/** One published Ed25519 key: ActivationService.GetSigningKeys's `kid` and raw 32-byte `publicKey`. */
export interface PublicKey {
  kid: string;
  publicKey: Uint8Array;
}

/** Looks keys up by kid, fetching them if need be (SigningKeys). */
export interface KeySource {
  /** The key named `kid`, or undefined when there is none; rejects when the keys cannot be had at all. */
  key(kid: string): Promise<PublicKey | undefined>;
}

/** A fixed list of keys, or a source that finds them. */
export type Keys = readonly PublicKey[] | KeySource;

export type KeyLookup = { ok: true; key: PublicKey } | { ok: false; code: "UNKNOWN_KEY" | "KEYS_UNAVAILABLE" };

const isSource = (keys: Keys): keys is KeySource => typeof (keys as KeySource).key === "function";

/** Finds `kid`; a source that fails (licensd unreachable, no key cached) is KEYS_UNAVAILABLE, not an error. */
export async function lookupKey(keys: Keys | undefined, kid: unknown): Promise<KeyLookup> {
  if (typeof kid !== "string" || keys === undefined) return { ok: false, code: "UNKNOWN_KEY" };
  if (!isSource(keys)) {
    const key = Array.isArray(keys) ? keys.find((k) => k?.kid === kid) : undefined;
    return key ? { ok: true, key } : { ok: false, code: "UNKNOWN_KEY" };
  }
  try {
    const key = await keys.key(kid);
    return key ? { ok: true, key } : { ok: false, code: "UNKNOWN_KEY" };
  } catch {
    return { ok: false, code: "KEYS_UNAVAILABLE" };
  }
}

/** Whether Ed25519 keys are configured at all (license files: HMAC files are refused then). */
export const hasKeys = (keys: Keys | undefined): boolean =>
  keys !== undefined && (isSource(keys) || (Array.isArray(keys) && keys.length > 0));
