/*
 * RFC 6962 Merkle tree hashes and the RFC 9162 §2.1.3.2 / §2.1.4.2 proof checks, over
 * licensd's audit log (docs/formats.md, "Merkle tree"). Written by hand: no maintained npm
 * package verifies RFC 6962 proofs in every runtime. Synchronous (SHA-256 from
 * @noble/hashes): a proof is a few dozen small hashes.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { equalBytes } from "./bytes.js";

/** The root of an empty tree: SHA-256 of nothing. */
export const EMPTY_ROOT: Uint8Array = sha256(new Uint8Array(0));

const LEAF = new Uint8Array([0]);
const NODE = new Uint8Array([1]);

/** SHA-256(0x00 ‖ entry hash): the leaf of an audit entry. */
export const leafHash = (entryHash: Uint8Array): Uint8Array => sha256.create().update(LEAF).update(entryHash).digest();

/** SHA-256(0x01 ‖ left ‖ right). */
export const nodeHash = (left: Uint8Array, right: Uint8Array): Uint8Array =>
  sha256.create().update(NODE).update(left).update(right).digest();

const isSize = (n: number) => Number.isSafeInteger(n) && n >= 0;
// Arithmetic, not bit operations: sizes may pass 2^31.
function isPowerOfTwo(n: number): boolean {
  while (n > 1 && n % 2 === 0) n /= 2;
  return n === 1;
}
const areHashes = (proof: readonly Uint8Array[]) =>
  Array.isArray(proof) && proof.every((p) => p instanceof Uint8Array && p.length === 32);

/** Does `proof` (leaf first) show `leaf` at `index` in the tree of `size` leaves with `root`? */
export function verifyInclusion(
  leaf: Uint8Array,
  index: number,
  size: number,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): boolean {
  if (!isSize(index) || !isSize(size) || index >= size || !areHashes(proof)) return false;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && equalBytes(r, root);
}

/** Is the tree (size1, root1) a prefix of (size2, root2), by `proof`? */
export function verifyConsistency(
  size1: number,
  size2: number,
  proof: readonly Uint8Array[],
  root1: Uint8Array,
  root2: Uint8Array,
): boolean {
  if (!isSize(size1) || !isSize(size2) || size1 === 0 || size1 > size2 || !areHashes(proof)) return false;
  if (size1 === size2) return proof.length === 0 && equalBytes(root1, root2);
  const path = isPowerOfTwo(size1) ? [root1, ...proof] : [...proof];
  if (path.length === 0) return false;
  let fn = size1 - 1;
  let sn = size2 - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = path[0]!;
  let sr = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && equalBytes(fr, root1) && equalBytes(sr, root2);
}
