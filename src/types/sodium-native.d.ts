// The few libsodium bindings licensd uses (sodium-native ships no type declarations).
declare module "sodium-native" {
  export const crypto_sign_BYTES: number;
  export const crypto_sign_PUBLICKEYBYTES: number;
  export const crypto_sign_SECRETKEYBYTES: number;
  export const crypto_sign_SEEDBYTES: number;
  /** Guarded, locked memory for secrets (libsodium's sodium_malloc). */
  export function sodium_malloc(size: number): Buffer;
  export function sodium_free(buf: Buffer): void;
  export function crypto_sign_seed_keypair(pk: Uint8Array, sk: Uint8Array, seed: Uint8Array): void;
  export function crypto_sign_detached(sig: Uint8Array, message: Uint8Array, sk: Uint8Array): void;
}
