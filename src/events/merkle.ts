import { createHash } from "node:crypto";

/*
 * RFC 6962 (Certificate Transparency) Merkle tree hashing, proofs and their
 * verification (RFC 9162 §2.1.3–2.1.4 algorithms). Written here because no maintained
 * npm package implements RFC 6962 proofs over a tree stored as perfect subtrees.
 *
 * The tree is stored as the hashes of its perfect, aligned subtrees: node (level, index)
 * covers leaves [index·2^level, (index+1)·2^level). Any range hash a proof needs is
 * composed from O(log n) of them.
 */

export const EMPTY_ROOT = createHash("sha256").digest();

export const leafHash = (data: Uint8Array): Buffer =>
  createHash("sha256")
    .update(Buffer.from([0]))
    .update(data)
    .digest();

export const nodeHash = (left: Uint8Array, right: Uint8Array): Buffer =>
  createHash("sha256")
    .update(Buffer.from([1]))
    .update(left)
    .update(right)
    .digest();

/** Largest power of two strictly less than n (n ≥ 2). */
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** Looks up a stored perfect subtree: level l, index i. */
export type PerfectNode = (level: number, index: number) => Buffer;

/** MTH(D[a:b]) per RFC 6962 §2.1, from perfect subtrees. */
export function rangeHash(a: number, b: number, node: PerfectNode): Buffer {
  const n = b - a;
  if (n === 0) return EMPTY_ROOT;
  if ((n & (n - 1)) === 0 && a % n === 0) return node(Math.log2(n), a / n);
  const k = split(n);
  return nodeHash(rangeHash(a, a + k, node), rangeHash(a + k, b, node));
}

export const rootHash = (size: number, node: PerfectNode) => rangeHash(0, size, node);

/** PATH(m, D[0:n]): the audit path of leaf m in the tree of size n (RFC 6962 §2.1.1). */
export function inclusionProof(m: number, n: number, node: PerfectNode): Buffer[] {
  const path: Buffer[] = [];
  let lo = 0;
  let hi = n;
  let index = m;
  // Walk down, collecting siblings; the path is listed leaf-first, so unshift.
  while (hi - lo > 1) {
    const k = split(hi - lo);
    if (index < k) {
      path.unshift(rangeHash(lo + k, hi, node));
      hi = lo + k;
    } else {
      path.unshift(rangeHash(lo, lo + k, node));
      lo += k;
      index -= k;
    }
  }
  return path;
}

/** PROOF(m, D[0:n]): consistency of the tree of size m with the one of size n (RFC 6962 §2.1.2). */
export function consistencyProof(m: number, n: number, node: PerfectNode): Buffer[] {
  if (m <= 0 || m > n) throw new RangeError(`consistency proof needs 0 < old size ≤ new size (got ${m}, ${n})`);
  const proof: Buffer[] = [];
  const sub = (m: number, lo: number, hi: number, complete: boolean) => {
    const n = hi - lo;
    if (m === n) {
      if (!complete) proof.unshift(rangeHash(lo, hi, node));
      return;
    }
    const k = split(n);
    if (m <= k) {
      proof.unshift(rangeHash(lo + k, hi, node));
      sub(m, lo, lo + k, complete);
    } else {
      proof.unshift(rangeHash(lo, lo + k, node));
      sub(m - k, lo + k, hi, false);
    }
  };
  sub(m, 0, n, true);
  return proof;
}

/**
 * Runs `compute` twice: first with a recording stub to learn which perfect subtrees it
 * needs, then with those fetched (one round trip) and served from a map.
 */
export async function withNodes<T>(
  compute: (node: PerfectNode) => T,
  fetch: (keys: { level: number; index: number }[]) => Promise<Map<string, Buffer>>,
): Promise<T> {
  const wanted = new Map<string, { level: number; index: number }>();
  const zero = Buffer.alloc(32);
  compute((level, index) => {
    wanted.set(`${level}:${index}`, { level, index });
    return zero;
  });
  const found = await fetch([...wanted.values()]);
  return compute((level, index) => {
    const hash = found.get(`${level}:${index}`);
    if (!hash) throw new Error(`missing tree node ${level}:${index}`);
    return hash;
  });
}

/**
 * Appends leaf `index` (0-based) to a tree whose right edge of complete subtrees is
 * `frontier` (the hashes of the perfect subtrees covering leaves [0, index), largest
 * first). Returns the new frontier and the perfect subtrees completed by this leaf.
 */
export function appendLeaf(
  frontier: Buffer[],
  index: number,
  leaf: Buffer,
): { frontier: Buffer[]; completed: { level: number; index: number; hash: Buffer }[] } {
  const next = [...frontier];
  const completed = [{ level: 0, index, hash: leaf }];
  let hash = leaf;
  let level = 0;
  let i = index;
  while (i % 2 === 1) {
    hash = nodeHash(next.pop()!, hash);
    level++;
    i = (i - 1) / 2;
    completed.push({ level, index: i, hash });
  }
  next.push(hash);
  return { frontier: next, completed };
}

/** RFC 9162 §2.1.3.2: does `proof` show `leaf` at `index` in the tree of `size` with `root`? */
export function verifyInclusion(
  leaf: Uint8Array,
  index: number,
  size: number,
  proof: Uint8Array[],
  root: Uint8Array,
): boolean {
  if (index < 0 || index >= size) return false;
  let fn = index;
  let sn = size - 1;
  let r: Buffer = Buffer.from(leaf);
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && r.equals(Buffer.from(root));
}

/** RFC 9162 §2.1.4.2: is the tree (size1, root1) a prefix of (size2, root2)? */
export function verifyConsistency(
  size1: number,
  size2: number,
  proof: Uint8Array[],
  root1: Uint8Array,
  root2: Uint8Array,
): boolean {
  if (size1 <= 0 || size1 > size2) return false;
  if (size1 === size2) return proof.length === 0 && Buffer.from(root1).equals(Buffer.from(root2));
  const path = proof.map((p) => Buffer.from(p));
  if ((size1 & (size1 - 1)) === 0) path.unshift(Buffer.from(root1));
  if (path.length === 0) return false;
  let fn = size1 - 1;
  let sn = size2 - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr: Buffer = path[0];
  let sr: Buffer = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && fr.equals(Buffer.from(root1)) && sr.equals(Buffer.from(root2));
}
