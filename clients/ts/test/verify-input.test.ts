/*
 * Forged, tampered and garbage input: every verifier answers with a typed code and never
 * throws or rejects, whatever it is given.
 */
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import path from "node:path";
import type { JsonObject } from "@bufbuild/protobuf";
import { ed25519 } from "@noble/curves/ed25519.js";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  auditEntryHash,
  createOfflineActivationRequest,
  parseOfflineActivationRequest,
  SigningKeys,
  verifyAuditProof,
  verifyCheckpoint,
  verifyConsistency,
  verifyInclusion,
  verifyLease,
  verifyLicenseFile,
  verifyValidationResponse,
} from "../src/index.js";

const v = JSON.parse(
  readFileSync(path.join(import.meta.dirname, "..", "..", "..", "docs", "test-vectors.json"), "utf8"),
) as {
  keys: { ed25519: { kid: string; public_key_hex: string }[] };
  license_files: { cases: { name: string; file: string; now: string; keys?: string[] }[] };
  leases: { cases: { name: string; token: string; fingerprint: string; now: string }[] };
  validate_license: {
    answers: Record<string, { request: { nonce?: string }; response_json: Record<string, unknown> }>;
  };
  audit: { checkpoints: { tree_size: number; api_json: JsonObject }[] };
};
const keys = v.keys.ed25519.map((k) => ({
  kid: k.kid,
  publicKey: Uint8Array.from(Buffer.from(k.public_key_hex, "hex")),
}));
const file = v.license_files.cases.find((c) => c.name === "Ed25519 file")!;
const lease = v.leases.cases.find((c) => c.name === "online lease, on its machine")!;
const answer = v.validate_license.answers.valid_on_machine!;
const checkpoint = v.audit.checkpoints.find((c) => c.tree_size === 7)!.api_json;
const now = new Date(file.now);

const b64u = (s: string | Uint8Array) => Buffer.from(s).toString("base64url");
/** The token re-signed by a key licensd never published, under a kid it did publish. */
function forge(token: string, edit: (payload: Record<string, unknown>) => void = () => {}) {
  const [prefix, body] = token.split(".") as [string, string];
  const payload = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as Record<string, unknown>;
  edit(payload);
  const input = `${prefix}.${b64u(JSON.stringify(payload))}`;
  const attacker = ed25519.utils.randomSecretKey();
  return `${input}.${b64u(ed25519.sign(new TextEncoder().encode(input), attacker))}`;
}

const garbage: unknown[] = [
  undefined,
  null,
  0,
  "",
  " ",
  "licensd1",
  "licensd1..",
  "licensd1.%%%.%%%",
  "licensd1e.AAAA.AAAA",
  `licensd1.${b64u("[]")}.AAAA`,
  `licensd1.${b64u("null")}.AAAA`,
  `licensd1.${b64u('{"v":1,"kid":{},"features":[]}')}.AAAA`,
  `licensd1.${b64u(new Uint8Array([0xff, 0xfe, 0x7b]))}.AAAA`,
  "x".repeat(100_000),
  {},
  [],
  new Uint8Array(64),
];

describe("license files and leases", () => {
  it("a file re-signed by an unpublished key, naming a published kid, is BAD_SIGNATURE", async () => {
    const forged = forge(file.file, (p) => {
      p.features = [...(p.features as string[]), "everything"];
    });
    const r = await verifyLicenseFile(forged, { keys, now });
    expect(r).toMatchObject({ valid: false, code: "BAD_SIGNATURE" });
    expect(r.hasFeature("everything")).toBe(false);
  });

  it("a lease moved to another machine, re-signed, is BAD_SIGNATURE", async () => {
    const forged = forge(lease.token, (p) => {
      p.fingerprint = "thief";
    });
    const r = await verifyLease(forged, keys, { fingerprint: "thief", now: new Date(lease.now) });
    expect(r).toMatchObject({ valid: false, code: "BAD_SIGNATURE", lease: undefined });
  });

  it("a signature of the wrong length, or not base64url, is BAD_SIGNATURE", async () => {
    const [prefix, body, sig] = file.file.split(".") as [string, string, string];
    for (const s of [sig.slice(0, 40), `${sig}AA`, "!!!!", ""])
      expect((await verifyLicenseFile(`${prefix}.${body}.${s}`, { keys, now })).code).toBe("BAD_SIGNATURE");
  });

  it("garbage is MALFORMED, DECRYPTION_FAILED or UNKNOWN_KEY, never an exception", async () => {
    for (const g of garbage) {
      const f = await verifyLicenseFile(g as string, { keys, now, licenseKey: "ACME-custom.key_2027" });
      expect(["MALFORMED", "DECRYPTION_FAILED", "UNKNOWN_KEY", "BAD_SIGNATURE"]).toContain(f.code);
      expect(f.valid).toBe(false);
      const l = await verifyLease(g as string, keys, { fingerprint: "fp", now });
      expect(l.valid).toBe(false);
    }
    // Options that are not what the types say do not crash either.
    expect((await verifyLicenseFile(file.file, null as never)).code).toBe("UNKNOWN_KEY");
    expect((await verifyLease(lease.token, "keys" as never, null as never)).code).toBe("UNKNOWN_KEY");
    expect(
      (await verifyLicenseFile(file.file, { keys: [{ kid: "sk_00000000000000000000testa" }] as never, now })).code,
    ).toBe("BAD_SIGNATURE");
  });

  it("any string at all gets a code (property: 500 random inputs)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string(),
          fc.string().map((s) => `licensd1.${b64u(s)}.${b64u(s)}`),
        ),
        async (s) => {
          const r = await verifyLicenseFile(s, { keys, now });
          return typeof r.code === "string" && r.valid === false;
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe("ValidateLicense answers", () => {
  const nonce = answer.request.nonce!;
  const at = new Date(answer.response_json.time as string);

  it("an answer re-signed by an unpublished key is BAD_SIGNATURE; without a readable signature, MALFORMED", async () => {
    const { signature: _s, ...unsigned } = answer.response_json;
    expect((await verifyValidationResponse(unsigned as never, { keys, nonce, now: at })).code).toBe("MALFORMED");
    const attacker = ed25519.utils.randomSecretKey();
    const forged = {
      ...answer.response_json,
      signature: Buffer.from(ed25519.sign(new Uint8Array(8), attacker)).toString("base64"),
    };
    expect((await verifyValidationResponse(forged as never, { keys, nonce, now: at })).code).toBe("BAD_SIGNATURE");
    // proto3 JSON's bytes are base64: an answer whose signature is not cannot be read.
    const notBase64 = { ...answer.response_json, signature: "%%%" };
    expect((await verifyValidationResponse(notBase64 as never, { keys, nonce, now: at })).code).toBe("MALFORMED");
  });

  it("garbage is MALFORMED, never an exception; no nonce given is NONCE_MISMATCH", async () => {
    for (const g of [...garbage, "{", "[1]", '{"signature":5}', '{"signature":"AA","valid":"yes"}'])
      expect((await verifyValidationResponse(g as never, { keys, nonce, now: at })).code).toBe("MALFORMED");
    const r = await verifyValidationResponse(answer.response_json as never, { keys, now: at } as never);
    expect(r).toMatchObject({ verified: false, code: "NONCE_MISMATCH", valid: false });
  });
});

describe("audit proofs", () => {
  it("garbage checkpoints and proofs are MALFORMED or NOT_INCLUDED/NOT_CONSISTENT, never an exception", async () => {
    for (const g of garbage) {
      expect((await verifyCheckpoint(g as never, keys)).verified).toBe(false);
      const inclusion = await verifyAuditProof({
        checkpoint,
        keys,
        inclusion: { entry: g as never, proof: g as never },
      });
      expect(["MALFORMED", "NOT_INCLUDED"]).toContain(inclusion.code);
      const consistency = await verifyAuditProof({
        checkpoint,
        keys,
        consistency: { older: g as never, proof: g as never },
      });
      expect(["MALFORMED", "NOT_CONSISTENT"]).toContain(consistency.code);
    }
    expect((await verifyAuditProof({ checkpoint, keys } as never)).code).toBe("MALFORMED");
    expect((await verifyAuditProof(null as never)).code).toBe("MALFORMED");
    expect((await verifyCheckpoint({ ...checkpoint, treeSize: "-1" }, keys)).code).toBe("MALFORMED");
  });

  it("proof checks refuse impossible sizes, indexes and hash lengths", () => {
    const h = new Uint8Array(32);
    expect(verifyInclusion(h, -1, 1, [], h)).toBe(false);
    expect(verifyInclusion(h, 0, Number.NaN, [], h)).toBe(false);
    expect(verifyInclusion(h, 1, 1, [], h)).toBe(false);
    expect(verifyInclusion(h, 0, 2, [new Uint8Array(31)], h)).toBe(false);
    expect(verifyInclusion(h, 0, 2, "x" as never, h)).toBe(false);
    expect(verifyConsistency(0, 1, [], h, h)).toBe(false);
    expect(verifyConsistency(2, 1, [], h, h)).toBe(false);
    expect(verifyConsistency(2 ** 40, 2 ** 41, [h], h, h)).toBe(false);
    expect(() => auditEntryHash({ seq: "x" } as never)).toThrow(TypeError);
  });
});

describe("air-gapped request files", () => {
  it("refuses bad options with a TypeError, and reads only what it wrote", () => {
    expect(() => createOfflineActivationRequest({ key: "", fingerprint: "fp" })).toThrow(TypeError);
    expect(() => createOfflineActivationRequest({ key: "k".repeat(20), fingerprint: "" })).toThrow(TypeError);
    expect(() => createOfflineActivationRequest({ key: "k".repeat(20), fingerprint: "f".repeat(256) })).toThrow(
      TypeError,
    );
    expect(() => createOfflineActivationRequest({ key: "k".repeat(20), fingerprint: "fp", cores: 1.5 })).toThrow(
      TypeError,
    );
    const text = createOfflineActivationRequest({ key: "ACME-custom.key_2027", fingerprint: "fp" });
    expect(parseOfflineActivationRequest(text)?.request).toMatchObject({ fingerprint: "fp", cores: 0 });
    // Two requests from the same machine differ by their nonce.
    expect(createOfflineActivationRequest({ key: "ACME-custom.key_2027", fingerprint: "fp" })).not.toBe(text);
    for (const g of garbage) expect(parseOfflineActivationRequest(g)).toBeUndefined();
  });
});

describe("SigningKeys with something that is not licensd", () => {
  it("an endpoint answering HTML, or an error, is KEYS_UNAVAILABLE for verifiers", async () => {
    const server = createServer((req, res) => {
      if (req.url?.includes("broken")) {
        res.writeHead(500).end("oops");
        return;
      }
      res.writeHead(200, { "content-type": "text/html" }).end("<html>not licensd</html>");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    try {
      for (const base of [`http://127.0.0.1:${port}`, `http://127.0.0.1:${port}/broken`]) {
        const source = new SigningKeys({ baseUrl: base });
        expect((await verifyLicenseFile(file.file, { keys: source, now })).code).toBe("KEYS_UNAVAILABLE");
        expect(
          (await verifyValidationResponse(answer.response_json as never, { keys: source, nonce: null })).code,
        ).toBe("KEYS_UNAVAILABLE");
      }
    } finally {
      server.close();
    }
  });
});
