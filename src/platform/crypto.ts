import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";

export const sha256 = (data: string | Buffer): Buffer => createHash("sha256").update(data).digest();

/** Constant-time equality of two secrets, whatever their lengths. */
export function secretsEqual(a: string, b: string): boolean {
  return timingSafeEqual(sha256(a), sha256(b));
}

/** A random secret as unpadded base64url: `bytes` of entropy. */
export const randomSecret = (bytes = 32): string => randomBytes(bytes).toString("base64url");

/**
 * The data key that seals (LICENSD_DATA_KEY) and the previous ones that only open (LICENSD_DATA_KEY_PREVIOUS), for a
 * rotation: values sealed under an old key stay readable until `licensd data-key rotate` re-seals them. The keys are
 * private fields, so a keyring that reaches a log line or JSON shows nothing of them.
 */
export class DataKeyring {
  readonly #keys: readonly Buffer[];

  constructor(current: Buffer, previous: readonly Buffer[] = []) {
    this.#keys = [current, ...previous];
  }

  /** The key that seals. */
  get current(): Buffer {
    return this.#keys[0]!;
  }

  /** How many keys open: the current one and the previous ones. */
  get size(): number {
    return this.#keys.length;
  }

  /** Fingerprints of the current key, then of each previous one (`dataKeyFingerprint`). */
  fingerprints(): string[] {
    return this.#keys.map(dataKeyFingerprint);
  }

  /**
   * `sealed` opened, with the index of the key that opened it (0: the current one, 1…: LICENSD_DATA_KEY_PREVIOUS in
   * order); undefined when none does. GCM's tag tells a wrong key from the right one.
   */
  unseal(sealed: Buffer, aad = ""): { plaintext: Buffer; keyIndex: number } | undefined {
    for (let keyIndex = 0; keyIndex < this.#keys.length; keyIndex++) {
      try {
        return { plaintext: openWith(this.#keys[keyIndex]!, sealed, aad), keyIndex };
      } catch {
        // not this key (or not a sealed value at all): the next one
      }
    }
    return undefined;
  }
}

/** A data key alone (it opens what it sealed) or a keyring (it opens under previous keys too). */
export type DataKeys = Buffer | DataKeyring;

/** A short, non-secret name for a data key (HMAC-SHA256 of a fixed label, 8 hex digits), for operators to compare. */
export const dataKeyFingerprint = (key: Buffer): string =>
  createHmac("sha256", key).update("licensd data key fingerprint").digest("hex").slice(0, 8);

/**
 * AES-256-GCM under the data key, for secrets licensd must give back later (license
 * keys for re-delivery, webhook secrets, signing keys). Layout: iv(12) | tag(16) | ciphertext,
 * with no key id: a keyring finds the key whose tag verifies.
 */
export function seal(keys: DataKeys, plaintext: Buffer, aad = ""): Buffer {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", keys instanceof DataKeyring ? keys.current : keys, iv);
  cipher.setAAD(Buffer.from(aad));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]);
}

/** Opens a sealed value under the data key, or under the first key of a keyring whose tag verifies; throws if none. */
export function open(keys: DataKeys, sealed: Buffer, aad = ""): Buffer {
  if (!(keys instanceof DataKeyring)) return openWith(keys, sealed, aad);
  const opened = keys.unseal(sealed, aad);
  if (!opened) throw new Error("Unsupported state or unable to authenticate data: no data key opens this value");
  return opened.plaintext;
}

function openWith(dataKey: Buffer, sealed: Buffer, aad: string): Buffer {
  const decipher = createDecipheriv("aes-256-gcm", dataKey, sealed.subarray(0, 12));
  decipher.setAAD(Buffer.from(aad));
  decipher.setAuthTag(sealed.subarray(12, 28));
  return Buffer.concat([decipher.update(sealed.subarray(28)), decipher.final()]);
}
