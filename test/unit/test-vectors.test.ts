/*
 * docs/test-vectors.json against licensd's TypeScript code and against the Python
 * verifiers (the SDK's, and the independent ones written from docs/formats.md).
 */
import { createHmac } from "node:crypto";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fromBinary, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { AuditEventSchema, CheckpointSchema } from "../../gen/ts/licensd/audit/v1/audit_event_pb.js";
import { ValidateLicenseResponseSchema } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import {
  leafHash,
  nodeHash,
  rootHash,
  EMPTY_ROOT,
  verifyConsistency,
  verifyInclusion,
} from "../../src/events/merkle.js";
import { checkpointText, cutText } from "../../src/audit/checkpoint.js";
import { deriveDataKeyMaterial } from "../../src/platform/data-key-material.js";
import { AuditKeyring } from "../../src/events/audit-keyring.js";
import { entryHash, GENESIS_HASH } from "../../src/events/events.js";
import { checkLicenseKey, LicenseKeyring, lookupLicenseKey } from "../../src/licensing/license-key.js";
import { validationSigningBytes } from "../../src/licensing/license.rpc.js";
import { open, sha256 } from "../../src/platform/crypto.js";
import { verifyEd25519 } from "../../src/platform/signing-keys.js";
import { verifyLease } from "../../src/licensing/lease-verify.js";
import { verifyLicenseFile } from "../../src/licensing/license-file-verify.js";
import {
  checkOfflineActivationRequest,
  licenseKeyDigest,
  parseOfflineActivationRequest,
} from "../../src/activation/offline-request.js";

const ROOT = path.join(import.meta.dirname, "..", "..");
const FILE = path.join(ROOT, "docs", "test-vectors.json");

type Json = Record<string, unknown>;
interface Vectors {
  keys: {
    ed25519: { kid: string; seed_hex: string; public_key_hex: string }[];
    data_key_hex: string;
    license_key_hmac_keyring: Record<string, string>;
    license_file_hmac_secret: string;
    audit_hmac_keys_hex: Record<string, string>;
  };
  derivations: {
    license_key_hmac_v0: { secret: string; key_signed_with_it: string; verifies: boolean };
    audit_dk1: { probe_hash_hex: string; hmac_hex: string; kid: string };
  };
  license_keys: {
    keyring: Record<string, string>;
    vectors: {
      name: string;
      input: string;
      expect: string;
      normalized?: string;
      kind?: string;
      product_code?: string;
      version?: number;
      hmac_input?: string;
      digest_hex?: string;
      digest_base64url?: string;
    }[];
  };
  license_files: {
    issued: Record<
      string,
      {
        file: string;
        signing_input: string;
        payload_json: string;
        signature_hex: string;
        encryption?: {
          license_key: string;
          file_key_hex: string;
          iv_hex: string;
          ciphertext_hex: string;
          tag_hex: string;
          plaintext: string;
        };
      }
    >;
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
    issued: Record<string, { token: string; signing_input: string; payload_json: string; signature_hex: string }>;
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
      {
        request: Json;
        response_json: Json;
        response_binary_base64: string;
        signing_text: string;
        kid: string;
        signature_hex: string;
      }
    >;
    cases: { name: string; answer: string; response_json: Json; keys: string[]; expect: boolean }[];
  };
  audit: {
    tenant_id: string;
    hmac_keys_hex: Record<string, string>;
    entries: {
      seq: number;
      canonical_json: string;
      hash_hex: string;
      kid: string;
      signature_hex: string;
      leaf_hash_hex: string;
      api_json: Json;
    }[];
    tampered_entries: { name: string; seq: number; api_json: Json; expect: string }[];
    roots: { tree_size: number; root_hex: string }[];
    checkpoints: { tree_size: number; signed_text: string; kid: string; signature_hex: string; api_json: Json }[];
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
    retention_cut: {
      seq: number;
      hash_hex: string;
      cut_at: string;
      signed_text: string;
      kid: string;
      signature_hex: string;
    };
  };
  merkle: {
    empty_root_hex: string;
    leaves_hex: string[];
    leaf_hashes_hex: string[];
    roots: { tree_size: number; root_hex: string }[];
  };
  sealing: {
    cases: { name: string; sealed_hex: string; aad: string; plaintext_hex?: string; expect: boolean }[];
    api_key: { secret: string; digest_hex: string };
  };
}

const v = JSON.parse(readFileSync(FILE, "utf8")) as Vectors;
const hex = (s: string) => Buffer.from(s, "hex");
const publishedKeys = (kids: string[] = []) =>
  v.keys.ed25519.filter((k) => kids.includes(k.kid)).map((k) => ({ kid: k.kid, publicKey: hex(k.public_key_hex) }));
const dataKey = hex(v.keys.data_key_hex);

/** The server's own check of a checkpoint's signature (the client's is in clients/ts/test/verify-vectors.test.ts). */
function verifyCheckpoint(cp: ReturnType<typeof checkpointOf>, keys: { kid: string; publicKey: Uint8Array }[]) {
  const key = keys.find((k) => k.kid === cp.kid);
  const text = checkpointText(cp.tenantId, cp.treeSize, cp.rootHash, cp.signTime);
  return !!key && verifyEd25519(key.publicKey, Buffer.from(text), cp.signature);
}

/** An audit entry as the API gives it (proto3 JSON), as the fields its hash covers. */
function entryOf(json: Json) {
  const e = fromJson(AuditEventSchema, json as JsonValue);
  return {
    tenantId: e.tenantId,
    seq: Number(e.seq),
    id: e.id,
    type: e.type,
    subject: e.subject,
    actor: e.actor,
    payload: e.payload,
    occurredAt: timestampDate(e.occurTime!),
    prevHash: e.prevHash,
    hash: e.hash,
    kid: e.kid,
    signature: e.signature,
  };
}

function checkpointOf(json: Json) {
  const c = fromJson(CheckpointSchema, json as JsonValue);
  return {
    tenantId: c.tenantId,
    treeSize: Number(c.treeSize),
    rootHash: c.rootHash,
    signTime: timestampDate(c.signTime!),
    kid: c.kid,
    signature: c.signature,
  };
}

describe("docs/test-vectors.json", () => {
  it("is exactly what scripts/test-vectors.ts produces from the code today", () => {
    const res = spawnSync(
      process.execPath,
      [
        path.join(ROOT, "node_modules", "tsx", "dist", "cli.mjs"),
        path.join(ROOT, "scripts", "test-vectors.ts"),
        "--check",
      ],
      { cwd: ROOT, encoding: "utf8" },
    );
    expect(res.status, res.stderr).toBe(0);
  });

  it("marks every key as test-only", () => {
    expect(readFileSync(FILE, "utf8")).toMatch(/TEST-ONLY/);
    expect((v.keys as unknown as { test_only: boolean }).test_only).toBe(true);
  });
});

describe("license keys", () => {
  const keyring = new LicenseKeyring(v.license_keys.keyring);
  it.each(v.license_keys.vectors)("$name → $expect", (c) => {
    const found = lookupLicenseKey(c.input, keyring);
    expect(found.ok ? "VALID" : found.code).toBe(c.expect);
    if (!found.ok) return;
    expect(found.key).toBe(c.normalized);
    expect(found.digest.toString("hex")).toBe(c.digest_hex);
    expect(found.digest.toString("base64url")).toBe(c.digest_base64url);
    if (c.kind === "vinzy")
      expect(checkLicenseKey(found.key, keyring)).toEqual({
        ok: true,
        productCode: c.product_code,
        version: c.version,
      });
  });

  it("derives the default version-0 secret from the data key, and dk1", () => {
    const material = deriveDataKeyMaterial(dataKey);
    expect(material.licenseKeyHmacV0).toBe(v.derivations.license_key_hmac_v0.secret);
    expect(
      checkLicenseKey(
        v.derivations.license_key_hmac_v0.key_signed_with_it,
        new LicenseKeyring({ "0": material.licenseKeyHmacV0 }),
      ).ok,
    ).toBe(true);
    const dk1 = new AuditKeyring(material.auditHmacDk1).sign(hex(v.derivations.audit_dk1.probe_hash_hex));
    expect({ kid: dk1.kid, hmac: dk1.signature.toString("hex") }).toEqual({
      kid: "dk1",
      hmac: v.derivations.audit_dk1.hmac_hex,
    });
    expect(
      createHmac("sha256", hex(v.audit.hmac_keys_hex.dk1))
        .update(hex(v.derivations.audit_dk1.probe_hash_hex))
        .digest("hex"),
    ).toBe(v.derivations.audit_dk1.hmac_hex);
  });
});

describe("license files", () => {
  it.each(v.license_files.cases)("$name → $expect", (c) => {
    const r = verifyLicenseFile(c.file, {
      keys: publishedKeys(c.keys),
      hmacSecret: c.hmac_secret,
      allowHmac: c.allow_hmac,
      licenseKey: c.license_key,
      fingerprint: c.fingerprint,
      now: new Date(c.now),
    });
    expect(r.code).toBe(c.expect);
  });

  it("take apart as documented: signing input, payload, signature, encryption", () => {
    for (const [name, f] of Object.entries(v.license_files.issued)) {
      const signed = f.encryption ? f.encryption.plaintext : f.file;
      expect(signed, name).toBe(`${f.signing_input}.${Buffer.from(f.signature_hex, "hex").toString("base64url")}`);
      expect(f.signing_input, name).toBe(
        `${f.signing_input.split(".")[0]}.${Buffer.from(f.payload_json).toString("base64url")}`,
      );
      if (f.encryption) {
        const e = f.encryption;
        expect(f.file, name).toBe(
          `licensd1e.${hex(e.iv_hex).toString("base64url")}.${Buffer.concat([hex(e.ciphertext_hex), hex(e.tag_hex)]).toString("base64url")}`,
        );
      }
    }
  });
});

describe("leases", () => {
  it.each(v.leases.cases)("$name → $expect", (c) => {
    expect(verifyLease(c.token, publishedKeys(c.keys), { fingerprint: c.fingerprint, now: new Date(c.now) }).code).toBe(
      c.expect,
    );
  });
});

describe("offline activation", () => {
  it.each(v.offline_activation.cases)("$name → $expect", (c) => {
    const parsed = parseOfflineActivationRequest(c.text);
    expect(!parsed ? "MALFORMED" : checkOfflineActivationRequest(parsed, c.key) ? "VALID" : "BAD_MAC").toBe(c.expect);
  });

  it.each(v.offline_activation.requests)("request: $name names the license by its key digest", (r) => {
    const parsed = parseOfflineActivationRequest(r.text)!;
    expect(parsed.signingInput).toBe(r.signing_input);
    expect(Buffer.from(parsed.request.key_digest, "base64url").toString("hex")).toBe(r.key_digest_hex);
    expect(licenseKeyDigest(r.key).toString("hex")).toBe(r.key_digest_hex);
    expect(parsed.mac.toString("hex")).toBe(r.mac_hex);
  });
});

describe("ValidateLicense answers", () => {
  it.each(Object.entries(v.validate_license.answers))(
    "%s: the signing text is the canonical JSON of the answer without kid and signature",
    (_, a) => {
      const fromJsonForm = fromJson(ValidateLicenseResponseSchema, a.response_json as JsonValue);
      const fromBinaryForm = fromBinary(ValidateLicenseResponseSchema, Buffer.from(a.response_binary_base64, "base64"));
      expect(validationSigningBytes(fromJsonForm).toString("utf8")).toBe(a.signing_text);
      expect(validationSigningBytes(fromBinaryForm).toString("utf8")).toBe(a.signing_text);
      expect(Buffer.from(fromJsonForm.signature).toString("hex")).toBe(a.signature_hex);
    },
  );

  it.each(v.validate_license.cases)("$name → verifies: $expect", (c) => {
    const res = fromJson(ValidateLicenseResponseSchema, c.response_json as JsonValue);
    const key = publishedKeys(c.keys).find((k) => k.kid === res.kid);
    expect(!!key && verifyEd25519(key.publicKey, validationSigningBytes(res), res.signature)).toBe(c.expect);
  });
});

describe("audit log", () => {
  const keyring = new AuditKeyring(
    deriveDataKeyMaterial(dataKey).auditHmacDk1,
    Object.fromEntries(Object.entries(v.keys.audit_hmac_keys_hex).map(([kid, k]) => [kid, hex(k)])),
  );

  it("entries: canonical JSON, hash, link, HMAC and leaf", () => {
    let prev: Uint8Array = GENESIS_HASH;
    for (const e of v.audit.entries) {
      const fields = entryOf(e.api_json);
      expect(sha256(e.canonical_json).toString("hex"), `seq ${e.seq}`).toBe(e.hash_hex);
      expect(entryHash(fields).toString("hex"), `seq ${e.seq}`).toBe(e.hash_hex);
      expect(Buffer.from(fields.prevHash).equals(Buffer.from(prev)), `seq ${e.seq}`).toBe(true);
      expect(keyring.verify(e.kid, hex(e.hash_hex), hex(e.signature_hex)), `seq ${e.seq}`).toBe(true);
      expect(leafHash(hex(e.hash_hex)).toString("hex")).toBe(e.leaf_hash_hex);
      prev = hex(e.hash_hex);
    }
  });

  it.each(v.audit.tampered_entries)("a changed entry: $name → $expect at its seq", (t) => {
    const chain = v.audit.entries.map((e) => (e.seq === t.seq ? t.api_json : e.api_json)).map(entryOf);
    let prev: Uint8Array = GENESIS_HASH;
    let found: { seq: number; problem: string } | undefined;
    for (const e of chain) {
      const problem = !entryHash(e).equals(Buffer.from(e.hash))
        ? "HASH_MISMATCH"
        : !Buffer.from(e.prevHash).equals(Buffer.from(prev))
          ? "BROKEN_LINK"
          : !keyring.verify(e.kid, e.hash, e.signature)
            ? "BAD_SIGNATURE"
            : undefined;
      if (problem) {
        found = { seq: e.seq, problem };
        break;
      }
      prev = e.hash;
    }
    expect(found).toEqual({ seq: t.seq, problem: t.expect });
  });

  it("Merkle roots of the log at every size", () => {
    const leaves = v.audit.entries.map((e) => hex(e.leaf_hash_hex));
    for (const r of v.audit.roots)
      expect(treeRoot(leaves.slice(0, r.tree_size)).toString("hex"), `size ${r.tree_size}`).toBe(r.root_hex);
  });

  it.each(v.audit.checkpoint_cases)("checkpoint: $name → $expect", (c) => {
    expect(verifyCheckpoint(checkpointOf(c.api_json), publishedKeys(c.keys))).toBe(c.expect);
  });

  it("checkpoint texts are the documented lines", () => {
    for (const c of v.audit.checkpoints) {
      const cp = checkpointOf(c.api_json);
      expect(checkpointText(cp.tenantId, cp.treeSize, cp.rootHash, cp.signTime)).toBe(c.signed_text);
      expect((c.api_json as { signedText: string }).signedText).toBe(c.signed_text);
    }
    const cut = v.audit.retention_cut;
    expect(cutText(v.audit.tenant_id, cut.seq, hex(cut.hash_hex), new Date(cut.cut_at))).toBe(cut.signed_text);
    expect(
      verifyEd25519(publishedKeys([cut.kid])[0].publicKey, Buffer.from(cut.signed_text), hex(cut.signature_hex)),
    ).toBe(true);
  });

  it.each(v.audit.inclusion_proofs)("inclusion of seq $seq in a tree of $tree_size → $expect", (p) => {
    const root = hex(v.audit.roots[p.tree_size].root_hex);
    expect(
      verifyInclusion(leafHash(hex(p.entry_hash_hex)), p.leaf_index, p.tree_size, p.proof_hex.map(hex), root),
    ).toBe(p.expect);
  });

  it.each(v.audit.consistency_proofs)("consistency of $old_size with $new_size → $expect", (p) => {
    const root = (size: number) => hex(v.audit.roots[size].root_hex);
    expect(verifyConsistency(p.old_size, p.new_size, p.proof_hex.map(hex), root(p.old_size), root(p.new_size))).toBe(
      p.expect,
    );
  });
});

/** MTH over leaf hashes, by RFC 6962's recursive definition (not the server's stored-subtree path). */
function treeRoot(leaves: Buffer[]): Buffer {
  if (leaves.length === 0) return EMPTY_ROOT;
  if (leaves.length === 1) return leaves[0];
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return nodeHash(treeRoot(leaves.slice(0, k)), treeRoot(leaves.slice(k)));
}

describe("RFC 6962 known answers", () => {
  it("leaf hashes and roots", () => {
    expect(EMPTY_ROOT.toString("hex")).toBe(v.merkle.empty_root_hex);
    const leaves = v.merkle.leaves_hex.map((l) => leafHash(hex(l)));
    expect(leaves.map((l) => l.toString("hex"))).toEqual(v.merkle.leaf_hashes_hex);
    for (const r of v.merkle.roots) {
      expect(
        rootHash(r.tree_size, (level, index) =>
          treeRoot(leaves.slice(index * 2 ** level, (index + 1) * 2 ** level)),
        ).toString("hex"),
      ).toBe(r.root_hex);
    }
  });
});

describe("sealing and digests", () => {
  it.each(v.sealing.cases)("$name → opens: $expect", (c) => {
    let opened: Buffer | undefined;
    try {
      opened = open(dataKey, hex(c.sealed_hex), c.aad);
    } catch {
      opened = undefined;
    }
    expect(opened !== undefined).toBe(c.expect);
    if (opened && c.plaintext_hex) expect(opened.toString("hex")).toBe(c.plaintext_hex);
  });

  it("API keys are found by the SHA-256 of their text", () => {
    expect(sha256(v.sealing.api_key.secret).toString("hex")).toBe(v.sealing.api_key.digest_hex);
  });
});

describe("Python consumes the same vectors", () => {
  it("the SDK's verifiers and the independent implementation from docs/formats.md pass every vector", () => {
    const res = spawnSync("/usr/bin/python3", [path.join(ROOT, "test", "unit", "vectors_check.py"), FILE], {
      encoding: "utf8",
    });
    expect(res.status, res.stderr).toBe(0);
    const report = JSON.parse(res.stdout) as Record<string, { checked: number; failures: string[] }>;
    const failures = Object.entries(report).flatMap(([section, r]) => r.failures.map((f) => `${section}: ${f}`));
    expect(failures).toEqual([]);
    // Every vector was looked at, so a section that silently skips its cases fails here.
    expect(report).toMatchObject({
      "sdk.license_files": { checked: v.license_files.cases.length },
      "sdk.leases": { checked: v.leases.cases.length },
      "sdk.offline_requests": { checked: v.offline_activation.requests.length },
      "independent.license_keys": { checked: v.license_keys.vectors.length },
      "independent.derivations": { checked: 2 },
      "independent.license_files": { checked: Object.keys(v.license_files.issued).length },
      "independent.offline_requests": { checked: v.offline_activation.cases.length },
      "independent.validate_license": {
        checked: v.validate_license.cases.length + Object.keys(v.validate_license.answers).length,
      },
      "independent.audit_entries": { checked: v.audit.entries.length + 1 + v.audit.tampered_entries.length },
      "independent.checkpoints": { checked: v.audit.checkpoint_cases.length + 1 },
      "independent.merkle": {
        checked:
          v.audit.roots.length +
          v.merkle.roots.length +
          v.audit.inclusion_proofs.length +
          v.audit.consistency_proofs.length,
      },
      "independent.sealing": { checked: v.sealing.cases.length + 1 },
    });
  });
});
