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
  | "mtr"
  | "anm"
  | "whe"
  | "whd";

const next = monotonicFactory();

/**
 * `<prefix>_<ulid>` in lowercase: 26 base32 characters whose first 10 encode the
 * creation time, so ordering by id is ordering by creation (used by pagination).
 */
export function newId(prefix: IdPrefix): string {
  return `${prefix}_${next().toLowerCase()}`;
}
