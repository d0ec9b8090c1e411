/*
 * docs/test-vectors.json through @licensd/client's offline verifiers: every case of every
 * section a client verifies (license files, leases, request and response files,
 * ValidateLicense answers, audit entries, checkpoints, proofs, Merkle known answers).
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { fromBinary, type JsonObject } from "@bufbuild/protobuf";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { describe, expect, it } from "vitest";
import { ValidateLicenseResponseSchema } from "../gen/licensd/licensing/v1/licensing_service_pb.js";
import {
  auditEntryHash,
  checkOfflineActivationRequest,
  checkpointText,
  createOfflineActivationRequest,
  EMPTY_ROOT,
  leafHash,
  licenseKeyDigest,
  nodeHash,
  parseOfflineActivationRequest,
  readCheckpoint,
  validationSigningBytes,
  verifyAuditProof,
  verifyCheckpoint,
  verifyConsistency,
  verifyEd25519,
  verifyInclusion,
  verifyLease,
  verifyLicenseFile,
  verifyOfflineActivationResponse,
  verifyValidationResponse,
} from "../src/index.js";

const FILE = path.join(import.meta.dirname, "..", "..", "..", "docs", "test-vectors.json");

type Json = JsonObject;
interface Vectors {
  keys: { ed25519: { kid: string; seed_hex: string; public_key_hex: string }[] };
  license_files: {
    cases: {
      name: string;
      file: string;
      keys?: string[];
      hmac_secret?: string;
      allow_hmac?: boolean;
      license_key?: string;
      fingerprint?: string;
      now: string;
      expect: string;
    }[];
  };
  leases: {
    issued: Record<string, { token: string }>;
    cases: { name: string; token: string; keys: string[]; fingerprint: string; now: string; expect: string }[];
  };
  offline_activation: {
    requests: {
      name: string;
      key: string;
      text: string;
      signing_input: string;
      request_json: string;
      mac_hex: string;
      key_digest_hex: string;
    }[];
    cases: { name: string; text: string; key: string; expect: string }[];
  };
  validate_license: {
    answers: Record<
      string,
      { request: Json; response_json: Json; response_binary_base64: string; signing_text: string; kid: string }
    >;
    cases: { name: string; answer: string; response_json: Json; keys: string[]; expect: boolean }[];
  };
  audit: {
    tenant_id: string;
    hmac_keys_hex: Record<string, string>;
    entries: { seq: number; canonical_json: string; hash_hex: string; leaf_hash_hex: string; api_json: Json }[];
    tampered_entries: { name: string; seq: number; api_json: Json; expect: string }[];
    roots: { tree_size: number; root_hex: string }[];
    checkpoints: { tree_size: number; signed_text: string; api_json: Json }[];
    checkpoint_cases: { name: string; api_json: Json; keys: string[]; expect: boolean }[];
    inclusion_proofs: {
      seq: number;
      leaf_index: number;
      tree_size: number;
      entry_hash_hex: string;
      proof_hex: string[];
      expect: boolean;
    }[];
    consistency_proofs: { old_size: number; new_size: number; proof_hex: string[]; expect: boolean }[];
    retention_cut: { signed_text: string; kid: string; signature_hex: string };
  };
  merkle: {
    empty_root_hex: string;
    leaves_hex: string[];
    leaf_hashes_hex: string[];
    roots: { tree_size: number; root_hex: string }[];
  };
}

const v = JSON.parse(readFileSync(FILE, "utf8")) as Vectors;
const hex = (s: string) => Uint8Array.from(Buffer.from(s, "hex"));
const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const published = (kids: string[] = []) =>
  v.keys.ed25519.filter((k) => kids.includes(k.kid)).map((k) => ({ kid: k.kid, publicKey: hex(k.public_key_hex) }));
const allKeys = published(v.keys.ed25519.map((k) => k.kid));
const rootOf = (size: number) => hex(v.audit.roots.find((r) => r.tree_size === size)!.root_hex);

describe("license files", () => {
  it.each(v.license_files.cases)("$name → $expect", async (c) => {
    const r = await verifyLicenseFile(c.file, {
      keys: published(c.keys),
      hmacSecret: c.hmac_secret,
      allowHmac: c.allow_hmac,
      licenseKey: c.license_key,
      fingerprint: c.fingerprint,
      now: new Date(c.now),
    });
    expect(r.code).toBe(c.expect);
    expect(r.valid).toBe(c.expect === "VALID");
    if (r.valid) expect(r.hasFeature(r.payload!.features[0]!)).toBe(r.payload!.features.length > 0);
    else expect(r.hasFeature("reports")).toBe(false);
  });
});

describe("leases", () => {
  it.each(v.leases.cases)("$name → $expect", async (c) => {
    const r = await verifyLease(c.token, published(c.keys), { fingerprint: c.fingerprint, now: new Date(c.now) });
    expect(r.code).toBe(c.expect);
    expect(r.lease !== undefined).toBe(c.expect === "VALID");
  });

  it("the offline lease is a response file: verifyOfflineActivationResponse reads it, trailing newline and all", async () => {
    const offline = v.leases.cases.find((c) => c.name.startsWith("offline lease"))!;
    const r = await verifyOfflineActivationResponse(`${offline.token}\n`, published(offline.keys), {
      fingerprint: offline.fingerprint,
      now: new Date(offline.now),
    });
    expect(r.code).toBe("VALID");
    expect(r.lease?.offline).toBe(true);
  });
});

describe("air-gapped request files", () => {
  it.each(v.offline_activation.cases)("$name → $expect", (c) => {
    const parsed = parseOfflineActivationRequest(c.text);
    expect(!parsed ? "MALFORMED" : checkOfflineActivationRequest(parsed, c.key) ? "VALID" : "BAD_MAC").toBe(c.expect);
  });

  it.each(v.offline_activation.requests)("$name: written byte for byte as the vector", (r) => {
    const request = JSON.parse(r.request_json) as {
      fingerprint: string;
      hostname: string;
      platform: string;
      cores: number;
      created_at: string;
      nonce: string;
    };
    const text = createOfflineActivationRequest({
      key: r.key,
      fingerprint: request.fingerprint,
      hostname: request.hostname || undefined,
      platform: request.platform || undefined,
      cores: request.cores || undefined,
      now: new Date(request.created_at),
      nonce: Uint8Array.from(Buffer.from(request.nonce, "base64url")),
    });
    expect(text).toBe(r.text);
    expect(toHex(licenseKeyDigest(r.key))).toBe(r.key_digest_hex);
    const parsed = parseOfflineActivationRequest(text)!;
    expect(parsed.signingInput).toBe(r.signing_input);
    expect(toHex(parsed.mac)).toBe(r.mac_hex);
  });
});

describe("ValidateLicense answers", () => {
  const at = (a: { response_json: Json }) => new Date(a.response_json.time as string);

  it.each(Object.entries(v.validate_license.answers))(
    "%s verifies as Connect JSON (object and text) and as a message decoded from binary",
    async (_, a) => {
      const nonce = (a.request.nonce as string | undefined) ?? "";
      const opts = { keys: allKeys, nonce, now: at(a) };
      expect(new TextDecoder().decode(validationSigningBytes(a.response_json))).toBe(a.signing_text);
      const fromObject = await verifyValidationResponse(a.response_json, opts);
      expect(fromObject.code).toBe("VERIFIED");
      expect(fromObject.valid).toBe(a.response_json.valid === true);
      expect((await verifyValidationResponse(JSON.stringify(a.response_json), opts)).code).toBe("VERIFIED");
      const message = fromBinary(ValidateLicenseResponseSchema, Buffer.from(a.response_binary_base64, "base64"));
      expect((await verifyValidationResponse(message, opts)).code).toBe("VERIFIED");
    },
  );

  it.each(v.validate_license.cases)("$name → verifies: $expect", async (c) => {
    const answer = v.validate_license.answers[c.answer]!;
    const r = await verifyValidationResponse(c.response_json, {
      keys: published(c.keys),
      nonce: (answer.request.nonce as string | undefined) ?? "",
      now: at(answer),
    });
    expect(r.verified).toBe(c.expect);
    if (!c.expect) expect(r.valid).toBe(false);
  });

  it.each(Object.entries(v.validate_license.answers))(
    "%s: its signed scope is the request's; another fingerprint's, user's or feature list fails",
    async (_, a) => {
      const r = a.request as { productCode?: string; fingerprint?: string; user?: string; entitlements?: string[] };
      const scope = {
        productCode: r.productCode ?? "",
        fingerprint: r.fingerprint ?? "",
        user: r.user ?? "",
        entitlements: r.entitlements ?? [],
      };
      const opts = { keys: allKeys, nonce: (a.request.nonce as string | undefined) ?? "", now: at(a) };
      expect((await verifyValidationResponse(a.response_json, { ...opts, scope })).code).toBe("VERIFIED");
      const none = { ...scope, components: [] };
      expect((await verifyValidationResponse(a.response_json, { ...opts, scope: none })).code).toBe("VERIFIED");
      for (const other of [
        { fingerprint: `${scope.fingerprint}-other` },
        { user: "eve" },
        { productCode: "ZZZ" },
        { entitlements: [...scope.entitlements, "export"] },
        { components: [{ name: "disk", fingerprint: "d-1" }] },
      ])
        expect(
          await verifyValidationResponse(a.response_json, { ...opts, scope: { ...scope, ...other } }),
        ).toMatchObject({ verified: false, code: "SCOPE_MISMATCH", valid: false });
    },
  );

  it("a replayed answer fails the nonce check, an old one the time check", async () => {
    const a = v.validate_license.answers.valid_on_machine!;
    const replay = await verifyValidationResponse(a.response_json, { keys: allKeys, nonce: "n-fresh", now: at(a) });
    expect(replay).toMatchObject({ verified: false, code: "NONCE_MISMATCH", valid: false });
    const nonce = a.request.nonce as string;
    const later = new Date(at(a).getTime() + 5 * 60_000 + 1);
    expect((await verifyValidationResponse(a.response_json, { keys: allKeys, nonce, now: later })).code).toBe(
      "TIME_OUT_OF_RANGE",
    );
    const kept = { keys: allKeys, nonce: null, maxAgeMs: Number.POSITIVE_INFINITY, now: later };
    expect((await verifyValidationResponse(a.response_json, kept)).code).toBe("VERIFIED");
  });
});

describe("audit log", () => {
  it("entries hash, from their API JSON, to the documented hash and leaf", () => {
    for (const e of v.audit.entries) {
      expect(toHex(auditEntryHash(e.api_json)), `seq ${e.seq}`).toBe(e.hash_hex);
      expect(toHex(sha256(new TextEncoder().encode(e.canonical_json)))).toBe(e.hash_hex);
      expect(toHex(leafHash(hex(e.hash_hex)))).toBe(e.leaf_hash_hex);
    }
  });

  // Entry HMACs are the operator's (customers check the log through checkpoints); the
  // test checks them with the vector keys only to find the first problem as documented.
  it.each(v.audit.tampered_entries)("a changed entry: $name → $expect at its seq", (t) => {
    const chain = v.audit.entries.map((e) => (e.seq === t.seq ? t.api_json : e.api_json));
    let prev = new Uint8Array(32);
    let found: { seq: number; problem: string } | undefined;
    for (const json of chain) {
      const stored = Buffer.from(json.hash as string, "base64");
      const problem = !stored.equals(auditEntryHash(json))
        ? "HASH_MISMATCH"
        : !Buffer.from(json.prevHash as string, "base64").equals(prev)
          ? "BROKEN_LINK"
          : !Buffer.from(json.signature as string, "base64").equals(
                hmac(sha256, hex(v.audit.hmac_keys_hex[json.kid as string]!), stored),
              )
            ? "BAD_SIGNATURE"
            : undefined;
      if (problem) {
        found = { seq: Number(json.seq), problem };
        break;
      }
      prev = stored;
    }
    expect(found).toEqual({ seq: t.seq, problem: t.expect });
  });

  it.each(v.audit.checkpoint_cases)("checkpoint: $name → $expect", async (c) => {
    expect((await verifyCheckpoint(c.api_json, published(c.keys))).verified).toBe(c.expect);
  });

  it("checkpoint texts are rebuilt from the fields; the retention cut verifies", async () => {
    for (const c of v.audit.checkpoints) expect(checkpointText(readCheckpoint(c.api_json))).toBe(c.signed_text);
    const cut = v.audit.retention_cut;
    const key = published([cut.kid])[0]!.publicKey;
    const text = new TextEncoder().encode(cut.signed_text);
    expect(await verifyEd25519(key, text, hex(cut.signature_hex))).toBe(true);
  });

  it.each(v.audit.inclusion_proofs)("inclusion of seq $seq in a tree of $tree_size → $expect", (p) => {
    const ok = verifyInclusion(
      leafHash(hex(p.entry_hash_hex)),
      p.leaf_index,
      p.tree_size,
      p.proof_hex.map(hex),
      rootOf(p.tree_size),
    );
    expect(ok).toBe(p.expect);
  });

  it.each(v.audit.consistency_proofs)("consistency of $old_size with $new_size → $expect", (p) => {
    const ok = verifyConsistency(p.old_size, p.new_size, p.proof_hex.map(hex), rootOf(p.old_size), rootOf(p.new_size));
    expect(ok).toBe(p.expect);
  });

  it("verifyAuditProof: every entry in the signed checkpoint of 7, and 4 → 7 consistent, against the checkpoints", async () => {
    const cp7 = v.audit.checkpoints.find((c) => c.tree_size === 7)!.api_json;
    const cp4 = v.audit.checkpoints.find((c) => c.tree_size === 4)!.api_json;
    for (const e of v.audit.entries) {
      const p = v.audit.inclusion_proofs.find((x) => x.seq === e.seq && x.tree_size === 7 && x.expect)!;
      const proof = {
        leafIndex: String(p.leaf_index),
        treeSize: "7",
        hashes: p.proof_hex.map((h) => Buffer.from(h, "hex").toString("base64")),
      };
      const r = await verifyAuditProof({ checkpoint: cp7, keys: allKeys, inclusion: { entry: e.api_json, proof } });
      expect(r.code, `seq ${e.seq}`).toBe("VERIFIED");
      // The same proof does not place another entry there.
      const other = v.audit.entries[e.seq % v.audit.entries.length]!.api_json;
      const wrong = await verifyAuditProof({ checkpoint: cp7, keys: allKeys, inclusion: { entry: other, proof } });
      expect(wrong.code).toBe("NOT_INCLUDED");
    }
    const c = v.audit.consistency_proofs.find((x) => x.old_size === 4 && x.new_size === 7 && x.expect)!;
    const proof = { hashes: c.proof_hex.map((h) => Buffer.from(h, "hex").toString("base64")) };
    const consistent = await verifyAuditProof({ checkpoint: cp7, keys: allKeys, consistency: { older: cp4, proof } });
    expect(consistent.code).toBe("VERIFIED");
    const rewritten = { ...cp4, rootHash: Buffer.from(rootOf(3)).toString("base64") };
    const r = await verifyAuditProof({ checkpoint: cp7, keys: allKeys, consistency: { older: rewritten, proof } });
    expect(r.code).toBe("NOT_CONSISTENT");
  });
});

describe("RFC 6962 known answers", () => {
  it("leaf hashes and roots", () => {
    expect(toHex(EMPTY_ROOT)).toBe(v.merkle.empty_root_hex);
    const leaves = v.merkle.leaves_hex.map((l) => leafHash(hex(l)));
    expect(leaves.map(toHex)).toEqual(v.merkle.leaf_hashes_hex);
    const root = (l: Uint8Array[]): Uint8Array => {
      if (l.length === 1) return l[0]!;
      let k = 1;
      while (k * 2 < l.length) k *= 2;
      return nodeHash(root(l.slice(0, k)), root(l.slice(k)));
    };
    for (const r of v.merkle.roots) expect(toHex(root(leaves.slice(0, r.tree_size)))).toBe(r.root_hex);
  });
});

describe("both Ed25519 implementations", () => {
  it("WebCrypto and @noble/curves give the same answer on every signed vector and on forgeries", async () => {
    const cases: { key: Uint8Array; message: Uint8Array; signature: Uint8Array }[] = [];
    for (const a of Object.values(v.validate_license.answers)) {
      const key = published([a.kid])[0]!.publicKey;
      cases.push({
        key,
        message: validationSigningBytes(a.response_json),
        signature: Uint8Array.from(Buffer.from(a.response_json.signature as string, "base64")),
      });
    }
    for (const c of v.audit.checkpoints) {
      const cp = readCheckpoint(c.api_json);
      cases.push({
        key: published([cp.kid])[0]!.publicKey,
        message: new TextEncoder().encode(checkpointText(cp)),
        signature: cp.signature,
      });
    }
    expect(cases.length).toBeGreaterThan(5);
    for (const c of cases) {
      expect(await verifyEd25519(c.key, c.message, c.signature, "webcrypto")).toBe(true);
      expect(await verifyEd25519(c.key, c.message, c.signature, "noble")).toBe(true);
      const flipped = Uint8Array.from(c.signature);
      flipped[10]! ^= 1;
      expect(await verifyEd25519(c.key, c.message, flipped, "webcrypto")).toBe(false);
      expect(await verifyEd25519(c.key, c.message, flipped, "noble")).toBe(false);
    }
  });
});
