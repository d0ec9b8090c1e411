import { describe, expect, it } from "vitest";
import {
  appendLeaf,
  consistencyProof,
  EMPTY_ROOT,
  inclusionProof,
  leafHash,
  rootHash,
  verifyConsistency,
  verifyInclusion,
  type PerfectNode,
} from "../../src/events/merkle.js";

/** A tree built the way the server builds it: leaf by leaf, storing completed perfect subtrees. */
function build(leaves: Buffer[]) {
  const nodes = new Map<string, Buffer>();
  let frontier: Buffer[] = [];
  leaves.forEach((data, i) => {
    const r = appendLeaf(frontier, i, leafHash(data));
    frontier = r.frontier;
    for (const c of r.completed) nodes.set(`${c.level}:${c.index}`, c.hash);
  });
  const node: PerfectNode = (level, index) => {
    const h = nodes.get(`${level}:${index}`);
    if (!h) throw new Error(`no node ${level}:${index}`);
    return h;
  };
  return { node, frontier };
}

// The test vectors of Certificate Transparency's reference implementation (merkle_tree_test).
const CT_LEAVES = [
  "",
  "00",
  "10",
  "2021",
  "3031",
  "40414243",
  "5051525354555657",
  "606162636465666768696a6b6c6d6e6f",
].map((h) => Buffer.from(h, "hex"));
const CT_ROOTS = [
  "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
  "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
  "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
  "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
  "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
  "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
  "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
  "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

describe("RFC 6962 Merkle tree", () => {
  it("matches the Certificate Transparency known-answer roots", () => {
    expect(EMPTY_ROOT.toString("hex")).toBe("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    for (let n = 1; n <= 8; n++) {
      const { node } = build(CT_LEAVES.slice(0, n));
      expect(rootHash(n, node).toString("hex"), `size ${n}`).toBe(CT_ROOTS[n - 1]);
    }
  });

  it("matches CT's known inclusion and consistency proofs", () => {
    const { node } = build(CT_LEAVES);
    expect(inclusionProof(0, 8, node).map((h) => h.toString("hex"))).toEqual([
      "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]);
    expect(consistencyProof(1, 8, node).map((h) => h.toString("hex"))).toEqual([
      "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]);
    expect(consistencyProof(6, 8, node).map((h) => h.toString("hex"))).toEqual([
      "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]);
  });

  it("proves and verifies inclusion of every leaf, and consistency of every pair of sizes, up to 40", () => {
    const leaves = Array.from({ length: 40 }, (_, i) => Buffer.from(`entry ${i}`));
    const { node } = build(leaves);
    const roots = leaves.map((_, i) => rootHash(i + 1, node));
    for (let n = 1; n <= leaves.length; n++) {
      for (let m = 0; m < n; m++) {
        const proof = inclusionProof(m, n, node);
        expect(verifyInclusion(leafHash(leaves[m]), m, n, proof, roots[n - 1]), `leaf ${m} in ${n}`).toBe(true);
        expect(verifyInclusion(leafHash(Buffer.from("tampered")), m, n, proof, roots[n - 1])).toBe(false);
        if (proof.length > 0) {
          const bad = proof.map((p) => Buffer.from(p));
          bad[0][0] ^= 1;
          expect(verifyInclusion(leafHash(leaves[m]), m, n, bad, roots[n - 1])).toBe(false);
        }
      }
      for (let m = 1; m <= n; m++) {
        const proof = consistencyProof(m, n, node);
        expect(verifyConsistency(m, n, proof, roots[m - 1], roots[n - 1]), `${m} → ${n}`).toBe(true);
        if (m < n) {
          expect(verifyConsistency(m, n, proof, leafHash(Buffer.from("forged")), roots[n - 1])).toBe(false);
          if (proof.length > 0) {
            const bad = proof.map((p) => Buffer.from(p));
            bad[bad.length - 1][0] ^= 1;
            expect(verifyConsistency(m, n, bad, roots[m - 1], roots[n - 1])).toBe(false);
          }
        }
      }
    }
  });

  it("a rewritten history is inconsistent with an earlier checkpoint", () => {
    const honest = build(Array.from({ length: 10 }, (_, i) => Buffer.from(`e${i}`)));
    const forkedLeaves = Array.from({ length: 12 }, (_, i) => Buffer.from(i === 3 ? "rewritten" : `e${i}`));
    const forked = build(forkedLeaves);
    const proof = consistencyProof(10, 12, forked.node);
    expect(verifyConsistency(10, 12, proof, rootHash(10, honest.node), rootHash(12, forked.node))).toBe(false);
  });
});
