import { randomFillSync } from "node:crypto";
import { monotonicFactory } from "ulid";

/** Resource id prefixes: the type of every id is visible in the id itself. */
export type IdPrefix =
  | "ten"
  | "key"
  | "req"
  | "evt"
  | "sk"
  | "prod"
  | "pol"
  | "cus"
  | "lic"
  | "mach"
  | "proc"
  | "lusr"
  | "mtr"
  | "anm"
  | "whe"
  | "whd"
  | "psrc"
  | "pev"
  | "eml";

/**
 * ulid's PRNG, a fraction in [0, 1) from one byte, served from a pool filled by the CSPRNG a few KiB at a time: ulid's
 * own asks the CSPRNG once per character (16 calls per id).
 */
function pooledRandom(size: number): () => number {
  const pool = Buffer.alloc(size);
  let next = size;
  return () => {
    if (next === size) {
      randomFillSync(pool);
      next = 0;
    }
    return pool[next++]! / 256;
  };
}

const next = monotonicFactory(pooledRandom(4096));

/**
 * `<prefix>_<ulid>` in lowercase: 26 base32 characters whose first 10 encode the
 * creation time, so ordering by id is ordering by creation (used by pagination).
 */
export function newId(prefix: IdPrefix): string {
  return `${prefix}_${next().toLowerCase()}`;
}
