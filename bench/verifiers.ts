/*
 * @licensd/client's offline verifiers (clients/ts/src/verify), in process on one core:
 * each verifier's rate against raw Ed25519 verify of a message of the same size with the
 * same primitive (WebCrypto's crypto.subtle, the key imported once), measured in
 * alternation in the same run. The same verify by @noble/curves (the fallback where
 * WebCrypto has no Ed25519) and by sodium-native (the server's libsodium) are references.
 */
import { createPrivateKey, sign } from "node:crypto";
import { create, fromBinary, type JsonObject, toBinary, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ed25519 } from "@noble/curves/ed25519.js";
import sodium from "sodium-native";
import {
  checkpointText,
  leafHash,
  validationSigningBytes,
  verifyAuditProof,
  verifyCheckpoint,
  verifyLease,
  verifyLicenseFile,
  verifyValidationResponse,
} from "@licensd/client";
import { ValidateLicenseResponseSchema, ValidationCode } from "../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { consistencyProof, inclusionProof, nodeHash, rootHash } from "../src/events/merkle.js";
import { encryptLicenseFile } from "../src/licensing/license-file.js";

const ROUNDS = 11;
const ROUND_MS = 300;
const NOW = new Date("2027-03-01T12:00:00.000Z");
const SEED = Buffer.alloc(32, 7);

// PKCS#8 for a raw Ed25519 seed: the fixed DER prefix, then the 32 bytes.
const privateKey = createPrivateKey({
  key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), SEED]),
  format: "der",
  type: "pkcs8",
});
const publicKey = ed25519.getPublicKey(SEED);
const KID = "sk_0000000000000000000000bench";
const keys = [{ kid: KID, publicKey }];
const signBytes = (msg: Uint8Array) => new Uint8Array(sign(null, msg, privateKey));
const b64u = (data: Uint8Array | string) => Buffer.from(data).toString("base64url");

function token(prefix: string, payload: object): { text: string; signed: Uint8Array } {
  const input = `${prefix}.${b64u(JSON.stringify(payload))}`;
  const signed = new TextEncoder().encode(input);
  return { text: `${input}.${b64u(signBytes(signed))}`, signed };
}

const filePayload = {
  v: 1,
  license_id: "lic_0000000000000000000000bench",
  tenant_id: "ten_0000000000000000000000bench",
  product: { code: "BEN", name: "Bench" },
  customer: { name: "Zoe", email: "zoe@example.com", organization: "Example" },
  plan: "pro",
  features: ["model", "reports", "seats"],
  entitlements: { model: "premium", reports: true, seats: 10 },
  agents: { coder: { enabled: true, token_limit: 100000, model_tier: "enterprise" } },
  max_machines: 3,
  max_users: 0,
  issued_at: "2027-03-01T00:00:00.000Z",
  expires_at: "2028-03-01T00:00:00.000Z",
  kid: KID,
};
const leasePayload = {
  ...filePayload,
  customer: undefined,
  typ: "lease",
  machine_id: "mach_000000000000000000000bench",
  fingerprint: "laptop-7f3a",
  status: "active",
  expires_at: "2027-03-02T12:00:00.000Z",
};

/** Ops/s of `op` awaited one after another for `ms`. */
async function rate(op: () => Promise<unknown>, ms = ROUND_MS): Promise<number> {
  let n = 0;
  const start = performance.now();
  while (performance.now() - start < ms) {
    for (let i = 0; i < 20; i++) await op();
    n += 20;
  }
  return n / ((performance.now() - start) / 1000);
}

/**
 * `op` and `baseline` in alternation, after a warm-up of both: each round measures one then
 * the other, so load from elsewhere hits the pair alike. Medians of the rates and of the
 * rounds' ratios, with the ratios' range.
 */
async function paired(op: () => Promise<unknown>, baseline: () => Promise<unknown>) {
  await rate(op, 200);
  await rate(baseline, 200);
  const a: number[] = [];
  const b: number[] = [];
  const ratios: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    a.push(await rate(op));
    b.push(await rate(baseline));
    ratios.push(a.at(-1)! / b.at(-1)!);
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[ROUNDS >> 1]!;
  const [low, high] = [Math.min(...ratios), Math.max(...ratios)];
  return { op: median(a), baseline: median(b), ratio: median(ratios), low, high };
}

/** A tree of `size` leaves, with the perfect-subtree lookup the server's proof functions take. */
function tree(size: number) {
  const levels: Uint8Array[][] = [Array.from({ length: size }, (_, i) => leafHash(entryHashOf(i)))];
  while (levels.at(-1)!.length > 1) {
    const below = levels.at(-1)!;
    const up: Uint8Array[] = [];
    for (let i = 0; i + 1 < below.length; i += 2) up.push(nodeHash(below[i]!, below[i + 1]!));
    levels.push(up);
  }
  return (level: number, index: number) => Buffer.from(levels[level]![index]!);
}
/** A stand-in entry hash for leaf i (the proofs only see hashes). */
const entryHashOf = (i: number) => new Uint8Array(Buffer.alloc(32, i % 251));

export async function run(): Promise<string> {
  const subtle = globalThis.crypto.subtle;
  const cryptoKey = await subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  /** Raw WebCrypto verify of `message`, key imported once: the baseline. */
  const raw = (message: Uint8Array) => {
    const signature = signBytes(message);
    return () => subtle.verify({ name: "Ed25519" }, cryptoKey, signature, message);
  };
  const sameSize = (n: number) => new Uint8Array(n).fill(0x61);

  const file = token("licensd1", filePayload);
  const encrypted = encryptLicenseFile(file.text, "PRD-DHMLL-SOGTH-2NWMU-CJME6-BJETN-HUBO3-XYS7W");
  const lease = token("licensd1", leasePayload);

  const answer = create(ValidateLicenseResponseSchema, {
    valid: true,
    code: ValidationCode.VALID,
    detail: "the license is valid",
    features: filePayload.features,
    nonce: "n-1c0ffee",
    time: timestampFromDate(NOW),
    lease: lease.text,
    kid: KID,
  });
  const unsigned = toJson(ValidateLicenseResponseSchema, answer) as JsonObject;
  const answerSigned = validationSigningBytes(unsigned);
  answer.signature = signBytes(answerSigned);
  const answerJson = toJson(ValidateLicenseResponseSchema, answer) as JsonObject;
  const answerText = JSON.stringify(answerJson);
  const answerBinary = toBinary(ValidateLicenseResponseSchema, answer);

  const size = 65_536;
  const node = tree(size);
  const root = rootHash(size, node);
  const cpFields = { tenantId: filePayload.tenant_id, treeSize: size, rootHash: root, signTime: NOW };
  const cpText = new TextEncoder().encode(checkpointText(cpFields));
  const checkpoint = {
    tenantId: cpFields.tenantId,
    treeSize: String(size),
    rootHash: root.toString("base64"),
    signTime: NOW.toISOString(),
    kid: KID,
    signature: Buffer.from(signBytes(cpText)).toString("base64"),
  };
  const leafIndex = 40_000;
  const inclusion = {
    entry: entryHashOf(leafIndex),
    proof: {
      leafIndex: String(leafIndex),
      treeSize: String(size),
      hashes: inclusionProof(leafIndex, size, node).map((h) => h.toString("base64")),
    },
  };
  const older = { treeSize: 40_001, rootHash: rootHash(40_001, node) };
  const consistency = {
    older,
    proof: { hashes: consistencyProof(40_001, size, node).map((h) => h.toString("base64")) },
  };

  const opts = { keys, now: NOW };
  const checks: [string, () => Promise<{ code: string }>, string][] = [
    ["verifyLicenseFile (`licensd1.`)", () => verifyLicenseFile(file.text, opts), "VALID"],
    [
      "verifyLicenseFile (`licensd1e.`, encrypted)",
      () => verifyLicenseFile(encrypted, { ...opts, licenseKey: "prd-dhmll-sogth-2nwmu-cjme6-bjetn-hubo3-xys7w" }),
      "VALID",
    ],
    ["verifyLease", () => verifyLease(lease.text, keys, { fingerprint: "laptop-7f3a", now: NOW }), "VALID"],
    [
      "verifyValidationResponse (Connect JSON text)",
      () => verifyValidationResponse(answerText, { keys, nonce: "n-1c0ffee", now: NOW }),
      "VERIFIED",
    ],
    [
      "verifyValidationResponse (message from binary)",
      () => verifyValidationResponse(fromBinaryAnswer(answerBinary), { keys, nonce: "n-1c0ffee", now: NOW }),
      "VERIFIED",
    ],
    ["verifyCheckpoint", () => verifyCheckpoint(checkpoint, keys), "VERIFIED"],
    [
      `verifyAuditProof, inclusion (${size.toLocaleString("en")} leaves, ${inclusion.proof.hashes.length} hashes)`,
      () => verifyAuditProof({ checkpoint, keys, inclusion }),
      "VERIFIED",
    ],
    [
      `verifyAuditProof, consistency (40,001 → ${size.toLocaleString("en")}, ${consistency.proof.hashes.length} hashes)`,
      () => verifyAuditProof({ checkpoint, keys, consistency }),
      "VERIFIED",
    ],
  ];
  const signedSize: Record<string, number> = {
    verifyLicenseFile: file.signed.length,
    verifyLease: lease.signed.length,
    verifyValidationResponse: answerSigned.length,
    verifyCheckpoint: cpText.length,
    verifyAuditProof: cpText.length,
  };

  const rows: string[] = [];
  for (const [name, op, expect] of checks) {
    const first = await op();
    if (first.code !== expect) throw new Error(`${name}: ${first.code}, expected ${expect}`);
    const bytes = signedSize[name.match(/^\w+/)![0]]!;
    const r = await paired(op, raw(sameSize(bytes)));
    const range = `${r.low.toFixed(2)}–${r.high.toFixed(2)}`;
    rows.push(`| ${name} | ${bytes} | ${fmt(r.op)} | ${fmt(r.baseline)} | ${r.ratio.toFixed(2)} | ${range} |`);
    console.log(rows.at(-1));
  }

  // References: the same verify of the license file's signed bytes by other implementations.
  const fileSig = signBytes(file.signed);
  const sodiumVerify = (
    sodium as unknown as { crypto_sign_verify_detached(s: Uint8Array, m: Uint8Array, k: Uint8Array): boolean }
  ).crypto_sign_verify_detached;
  const webcrypto = await rate(() => subtle.verify({ name: "Ed25519" }, cryptoKey, fileSig, file.signed), 1000);
  const noble = await rate(async () => ed25519.verify(fileSig, file.signed, publicKey, { zip215: false }), 1000);
  const native = await rate(async () => sodiumVerify(fileSig, file.signed, Buffer.from(publicKey)), 1000);

  return [
    "## Client verifiers (bench/verifiers.ts)",
    "",
    `@licensd/client's offline verifiers (clients/ts/src/verify), awaited one after another on one core. Each is measured in alternation with raw Ed25519 verify of a message of the same size by the same primitive (WebCrypto \`crypto.subtle.verify\`, key imported once): ${ROUNDS} rounds of ${ROUND_MS} ms each, one then the other; ops/s are medians, the ratio is the median of the rounds' ratios (their range beside it). The ratio is what the verifier costs over the signature check it cannot avoid (parsing, base64, JSON, JCS, key import, HKDF + AES-GCM, Merkle hashing).`,
    "",
    "| verifier | signed bytes | ops/s | raw Ed25519 ops/s (same size) | ratio | rounds' ratios |",
    "|---|---:|---:|---:|---:|---:|",
    ...rows,
    "",
    `References, the license file's ${file.signed.length} signed bytes, same run: WebCrypto verify ${fmt(webcrypto)}/s, @noble/curves (the pure fallback, used where WebCrypto has no Ed25519) ${fmt(noble)}/s (${(noble / webcrypto).toFixed(2)} × WebCrypto), sodium-native (libsodium, the server's; not usable in a browser) ${fmt(native)}/s (${(native / webcrypto).toFixed(2)} × WebCrypto).`,
  ].join("\n");
}

const fmt = (n: number) => Math.round(n).toLocaleString("en");

// Decoding is part of what a gRPC client pays, so it is inside the measured op.
const fromBinaryAnswer = (bytes: Uint8Array) => fromBinary(ValidateLicenseResponseSchema, bytes);
