/*
 * Ed25519 verification (RFC 8032, pure, no context). The runtime's WebCrypto does it
 * natively where it has Ed25519 (Node ≥ 20, Deno, Bun, Chrome ≥ 137, Firefox ≥ 129,
 * Safari ≥ 17); elsewhere, and where `crypto.subtle` is missing (browser pages not served
 * over HTTPS), @noble/curves does it in plain JavaScript, with the same strict RFC 8032
 * rules (zip215 off), so both give the same answer for every input.
 */
import { ed25519 } from "@noble/curves/ed25519.js";

export type Ed25519Backend = "webcrypto" | "noble";

const ALGORITHM = { name: "Ed25519" } as const;
// RFC 8032 §7.1 test 1's public key: a valid key to probe WebCrypto's support with.
const PROBE_KEY = new Uint8Array([
  0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1, 0x72,
  0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
]);

// What the runtime offers does not change while it runs: probed once, on first use.
let probed: Promise<Ed25519Backend> | undefined;

/** Which implementation verifies here: the runtime's WebCrypto, or @noble/curves. */
export function ed25519Backend(): Promise<Ed25519Backend> {
  probed ??= (async () => {
    try {
      const subtle = globalThis.crypto?.subtle;
      if (!subtle) return "noble";
      await subtle.importKey("raw", PROBE_KEY, ALGORITHM, false, ["verify"]);
      return "webcrypto";
    } catch {
      return "noble";
    }
  })();
  return probed;
}

/**
 * Does `signature` verify `message` under the raw 32-byte `publicKey`? False, never an
 * error, for keys or signatures of the wrong length or encoding. `backend` forces one
 * implementation (tests and benchmarks compare them).
 */
export async function verifyEd25519(
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
  backend?: Ed25519Backend,
): Promise<boolean> {
  if (!(publicKey instanceof Uint8Array) || !(message instanceof Uint8Array) || !(signature instanceof Uint8Array))
    return false;
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    if ((backend ?? (await ed25519Backend())) === "webcrypto") {
      const subtle = globalThis.crypto.subtle;
      // Importing a raw key costs little next to the verify; not caching keeps no state here.
      const key = await subtle.importKey("raw", publicKey as Uint8Array<ArrayBuffer>, ALGORITHM, false, ["verify"]);
      return await subtle.verify(
        ALGORITHM,
        key,
        signature as Uint8Array<ArrayBuffer>,
        message as Uint8Array<ArrayBuffer>,
      );
    }
    return ed25519.verify(signature, message, publicKey, { zip215: false });
  } catch {
    return false;
  }
}
