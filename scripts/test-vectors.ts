/*
 * Writes docs/test-vectors.json: known answers for every byte format in docs/formats.md,
 * produced by licensd's own code (the services that issue files, leases and validation
 * answers, run over in-memory stand-ins for the database), from fixed TEST-ONLY keys.
 *
 *   npx tsx scripts/test-vectors.ts           regenerate the file
 *   npx tsx scripts/test-vectors.ts --check   exit 1 if the file is not what the code produces
 *
 * Randomness (IVs, nonces, generated keys) comes from a fixed SHA-256 counter stream, so
 * the output only changes when a format or a fixture changes.
 */
import {
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  hkdfSync,
  sign,
  type KeyObject,
} from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire, syncBuiltinESMExports } from "node:module";
import path from "node:path";
import { create, toBinary, toJson } from "@bufbuild/protobuf";
import { createContextValues, type HandlerContext } from "@connectrpc/connect";
import canonicalize from "canonicalize";
import { AuditEventSchema, CheckpointSchema } from "../gen/ts/licensd/audit/v1/audit_event_pb.js";
import {
  ValidateLicenseRequestSchema,
  ValidateLicenseResponseSchema,
} from "../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { createMachineService } from "../src/activation/machine.service.js";
import { createLicenseMachines } from "../src/activation/license-machines.js";
import type { Machine } from "../src/activation/machine.entity.js";
import { auditEventToProto, checkpointToProto } from "../src/audit/audit.mapper.js";
import type { AuditEntry } from "../src/events/log-store.js";
import type { AuditFeed } from "../src/events/audit-feed.js";
import { checkpointText, cutText } from "../src/audit/checkpoint.js";
import {
  consistencyProof,
  EMPTY_ROOT,
  inclusionProof,
  leafHash,
  nodeHash,
  rootHash,
  type PerfectNode,
} from "../src/events/merkle.js";
import { deriveDataKeyMaterial } from "../src/platform/data-key-material.js";
import { AuditKeyring } from "../src/events/audit-keyring.js";
import { entryHash, GENESIS_HASH, type Events, type JsonValue } from "../src/events/events.js";
import type { CatalogService } from "../src/licensing/catalog.service.js";
import type { AgentEntitlement, Entitlement, FeatureDefinition } from "../src/licensing/entitlements.js";
import {
  decryptLicenseFile,
  ED25519_PREFIX,
  encodeLicenseFile,
  type LicenseFilePayload,
} from "../src/licensing/license-file.js";
import {
  checkLicenseKey,
  generateLicenseKey,
  KeyCharacterPool,
  LicenseKeyring,
  lookupLicenseKey,
} from "../src/licensing/license-key.js";
import { createLicenseRpc, validationSigningBytes } from "../src/licensing/license.rpc.js";
import { createLicenseService } from "../src/licensing/license.service.js";
import type { Customer, License, Policy, Product } from "../src/licensing/licensing.entity.js";
import { createValidationService } from "../src/licensing/validation.service.js";
import { ValidationAnswers } from "../src/licensing/validation-answer.js";
import { ManualClock } from "../src/platform/clock.js";
import { open, seal, sha256 } from "../src/platform/crypto.js";
import type { Database, EntityManager } from "../src/platform/db.js";
import type { KeyFailureLimit } from "../src/platform/key-failures.js";
import type { SigningKeyStore } from "../src/platform/signing-keys.js";
// From the client package's sources: the script runs under plain tsx, without the licensd-source condition.
import { createOfflineActivationRequest } from "../clients/ts/src/verify/offline-activation.js";
import { verifyWebhook } from "../clients/ts/src/verify/webhook.js";
import { checkOfflineActivationRequest, parseOfflineActivationRequest } from "../src/activation/offline-request.js";

const ROOT = path.join(import.meta.dirname, "..");
const OUT = path.join(ROOT, "docs", "test-vectors.json");

// ---------------------------------------------------------------- deterministic randomness

/** SHA-256("licensd test vectors" ‖ counter) blocks, handed out in order. */
function fixedStream() {
  let counter = 0;
  let buffered = Buffer.alloc(0);
  return (n: number): Buffer => {
    while (buffered.length < n) {
      const c = Buffer.alloc(4);
      c.writeUInt32BE(counter++);
      buffered = Buffer.concat([buffered, createHash("sha256").update("licensd test vectors").update(c).digest()]);
    }
    const out = Buffer.from(buffered.subarray(0, n));
    buffered = buffered.subarray(n);
    return out;
  };
}
// Every module here imports randomBytes from node:crypto; this replaces it for this process only.
const nodeCrypto = createRequire(import.meta.url)("node:crypto") as { randomBytes: (n: number) => Buffer };
nodeCrypto.randomBytes = fixedStream();
// One pool of key characters for every keyring here, so keys take their bytes from the stream in minting order.
const keyCharacters = new KeyCharacterPool();
syncBuiltinESMExports();

// ---------------------------------------------------------------- helpers

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");
const b64url = (b: Uint8Array | string) => Buffer.from(b).toString("base64url");
const fromB64url = (s: string) => Buffer.from(s, "base64url");

interface TestSigningKey {
  kid: string;
  seed: Buffer;
  privateKey: KeyObject;
  publicKey: Buffer;
}

/** An Ed25519 key from a 32-byte seed (RFC 8032's own test seeds: public, never for production). */
function ed25519(kid: string, seedHex: string): TestSigningKey {
  const seed = Buffer.from(seedHex, "hex");
  const privateKey = createPrivateKey({
    key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]),
    format: "der",
    type: "pkcs8",
  });
  const publicKey = createPublicKey(privateKey).export({ format: "der", type: "spki" }).subarray(12);
  return { kid, seed, privateKey, publicKey };
}

/**
 * What the services need of SigningKeyStore, signing with a fixed key (Ed25519 is deterministic: the same bytes
 * libsodium makes).
 */
function signer(active: TestSigningKey, published: TestSigningKey[]): SigningKeyStore {
  const signWith = (m: Uint8Array) => ({ kid: active.kid, signature: sign(null, m, active.privateKey) });
  const fake = {
    activeKid: () => active.kid,
    sign: signWith,
    signLater: async (m: string) => signWith(Buffer.from(m)),
    publicKeys: () =>
      published.map((k) => ({
        kid: k.kid,
        algorithm: "Ed25519",
        publicKey: k.publicKey,
        status: k === active ? "active" : "retiring",
        notBefore: new Date(0),
        notAfter: null,
      })),
  };
  return fake as unknown as SigningKeyStore;
}

/**
 * An EntityManager over arrays: findOne matches every field of `where` (the services read licenses and machines this
 * way).
 */
function memoryEm(rows: { licenses: License[]; machines: Machine[] }): EntityManager {
  const match = (row: object, where: Record<string, unknown>) =>
    Object.entries(where).every(([k, v]) => (row as Record<string, unknown>)[k] === v);
  const fake = {
    findOne: async (entity: { name: string }, where: Record<string, unknown>) => {
      const list: object[] = entity.name === "License" ? rows.licenses : entity.name === "Machine" ? rows.machines : [];
      return list.find((r) => match(r, where)) ?? null;
    },
    flush: async () => {},
  };
  return fake as unknown as EntityManager;
}

const noEvents: Events = {
  emit: async () => ({ id: "evt_unused" }),
  emitSequenced: async () => ({ id: "evt_unused", seq: 0 }),
  queuedBy: async () => {},
  queuedSoon: () => {},
  settle: async () => {},
};

// ---------------------------------------------------------------- TEST-ONLY keys and fixtures

const KEY_A = ed25519(
  "sk_00000000000000000000testa",
  "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
);
const KEY_B = ed25519(
  "sk_00000000000000000000testb",
  "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
);
const DATA_KEY = Buffer.from("test-only data key, never use it", "utf8");
const KEYRING_SECRETS = { "0": "test-only vinzy secret, version 0", "3": "test-only vinzy secret, version 3" };
const FILE_HMAC_SECRET = "test-only license-file shared secret (32+ chars)";
const AUDIT_KEY_ID = "a2027";
const AUDIT_KEY = Buffer.from("test-only audit hmac key 32bytes", "utf8");
const TENANT = "ten_0000000000000000000000test";
const ISSUED_AT = new Date("2027-03-01T12:00:00.000Z");
const keyring = new LicenseKeyring(KEYRING_SECRETS, keyCharacters);
/**
 * The audit key dk1 as docs/formats.md derives it (AuditKeyring keeps it private; the vectors check it against
 * AuditKeyring's HMACs).
 */
const DK1 = Buffer.from(hkdfSync("sha256", DATA_KEY, Buffer.alloc(0), "licensd audit hmac v1", 32));

const FEATURES: FeatureDefinition[] = [
  { name: "reports", kind: "flag", compose: "union", description: "" },
  { name: "export", kind: "flag", compose: "union", description: "" },
  { name: "seats", kind: "limit", compose: "sum", description: "" },
  { name: "model", kind: "tier", compose: "max", description: "" },
];
const POLICY_ENTITLEMENTS: Entitlement[] = [
  { feature: "reports", enabled: true },
  { feature: "export", enabled: false },
  { feature: "seats", limit: 5 },
  { feature: "model", tier: "premium" },
];
// Unset attributes take defaults in a policy and are inherited in an override (Vinzy's merge).
const POLICY_AGENTS: AgentEntitlement[] = [
  { agent: "coder", tokenLimit: 100000, modelTier: "premium" },
  { agent: "reviewer" },
  { agent: "tester", enabled: false, tokenLimit: 0 },
];
const LICENSE_AGENTS: AgentEntitlement[] = [
  { agent: "coder", modelTier: "enterprise" },
  { agent: "reviewer", tokenLimit: 5000 },
];

const product = {
  id: "prod_0000000000000000000000test",
  tenantId: TENANT,
  code: "PRD",
  name: "Test Product — ünïcödé",
  features: FEATURES,
  metadata: {},
} as unknown as Product;
const policy = {
  id: "pol_0000000000000000000000test",
  tenantId: TENANT,
  productId: product.id,
  name: "pro",
  durationSeconds: null,
  allFeatures: false,
  entitlements: POLICY_ENTITLEMENTS,
  agentEntitlements: POLICY_AGENTS,
  maxMachines: 3,
  maxUsers: 10,
  floating: true,
  heartbeatSeconds: null,
  expirationStrategy: "restrict_access",
  graceSeconds: 0,
  overageStrategy: "no_overage",
  leaseTtlSeconds: null,
  heartbeatGraceSeconds: 0,
  heartbeatCullStrategy: "deactivate_dead",
  heartbeatResurrectionSeconds: null,
  offlineLeaseTtlSeconds: null,
  requireFingerprintScope: false,
  metadata: {},
} as unknown as Policy;
const customer = {
  id: "cus_0000000000000000000000test",
  tenantId: TENANT,
  name: "Zoë Example",
  email: "zoe@example.com",
  organization: "Example GmbH",
  metadata: {},
} as unknown as Customer;

/**
 * A license of the fixture policy; its key is stored as licensd stores it (digest, and sealed under the data key with
 * the license id as AAD).
 */
function license(
  id: string,
  key: string,
  over: Partial<Pick<License, "status" | "expiresAt" | "entitlementOverrides" | "agentOverrides" | "maxMachines">> = {},
): License {
  return {
    id,
    tenantId: TENANT,
    productId: product.id,
    policyId: policy.id,
    customerId: customer.id,
    status: "active",
    keyDigest: sha256(key),
    keySealed: seal(DATA_KEY, Buffer.from(key), id),
    keyPrefix: key.slice(0, 9),
    expiresAt: new Date("2028-03-01T00:00:00.000Z"),
    entitlementOverrides: [{ feature: "seats", limit: 10 }],
    agentOverrides: LICENSE_AGENTS,
    maxMachines: null,
    metadata: {},
    suspendedAt: null,
    revokedAt: null,
    createdAt: ISSUED_AT,
    updatedAt: ISSUED_AT,
    ...over,
  } as unknown as License;
}

function machine(id: string, licenseId: string, fingerprint: string, offline = false): Machine {
  return {
    id,
    tenantId: TENANT,
    licenseId,
    fingerprint,
    hostname: "build-01",
    platform: "linux-x64",
    cores: 8,
    ip: "",
    metadata: {},
    lastHeartbeatAt: ISSUED_AT,
    status: "alive",
    deadAt: null,
    offline,
    createdAt: ISSUED_AT,
    updatedAt: ISSUED_AT,
  } as unknown as Machine;
}

const catalog = {
  getProduct: async () => product,
  getPolicy: async () => policy,
  getCustomer: async () => customer,
} as unknown as CatalogService;

// ---------------------------------------------------------------- license keys

function licenseKeys() {
  const mint = (product: string, secrets: Record<string, string>) =>
    generateLicenseKey(product, new LicenseKeyring(secrets, keyCharacters));
  const v3 = mint("PRD", { "3": KEYRING_SECRETS["3"] });
  const v0 = mint("AB9", { "0": KEYRING_SECRETS["0"] });
  const preVersioning = mint("PRD", { "25": KEYRING_SECRETS["0"] }); // first character Z: version 25, which has no secret
  const crossVersion = mint("PRD", { "3": KEYRING_SECRETS["0"] }); // names version 3, signed with version 0's secret
  const foreign = mint("PRD", { "3": "test-only secret of another keyring" });
  const flip = (key: string, at: number) => key.slice(0, at) + (key[at] === "A" ? "B" : "A") + key.slice(at + 1);
  const cases: { name: string; input: string }[] = [
    { name: "current version (3), signed by its secret", input: v3 },
    { name: "version 0, signed by its secret", input: v0 },
    { name: "lower case and surrounding whitespace are normalised", input: `  ${v3.toLowerCase()}\n` },
    { name: "version 25 has no secret: valid because another secret matches", input: preVersioning },
    {
      name: "names version 3 but was signed with version 0's secret: valid (any secret may match)",
      input: crossVersion,
    },
    { name: "a character of the body changed", input: flip(v3, 10) },
    { name: "a character of the HMAC changed", input: flip(v3, 40) },
    { name: "signed by a secret not in the keyring", input: foreign },
    { name: "custom key (vendor's own, no HMAC)", input: "ACME-custom.key_2027" },
    { name: "custom keys are case-sensitive and only trimmed", input: " acme-CUSTOM.key_2027 " },
    { name: "too short for a custom key", input: "short-key" },
    { name: "too long for a custom key (129 characters)", input: "K".repeat(129) },
    { name: "a character outside the custom alphabet (inner space)", input: `${v3.slice(0, 9)} ${v3.slice(10)}` },
    { name: "not Vinzy-shaped ('1' is not base32), so read as a custom key", input: `PRD-1${v3.slice(5)}` },
    { name: "one segment missing: not Vinzy-shaped, so read as a custom key", input: v3.slice(0, 39) },
  ];
  return {
    keyring: KEYRING_SECRETS,
    vectors: cases.map(({ name, input }) => {
      const found = lookupLicenseKey(input, keyring);
      const check =
        found.ok && /^[A-Z0-9]{3}(-[A-Z2-7]{5}){7}$/.test(found.key) ? checkLicenseKey(found.key, keyring) : undefined;
      return {
        name,
        input,
        expect: found.ok ? "VALID" : found.code,
        ...(found.ok
          ? {
              normalized: found.key,
              kind: check ? "vinzy" : "custom",
              ...(check?.ok
                ? { product_code: check.productCode, version: check.version, hmac_input: found.key.slice(0, 33) }
                : {}),
              digest_hex: hex(found.digest),
              digest_base64url: b64url(found.digest),
            }
          : {}),
      };
    }),
  };
}

// ---------------------------------------------------------------- derived secrets

function derivations() {
  // What a first start stores in data_key_material (and every install derived before it was stored).
  const material = deriveDataKeyMaterial(DATA_KEY);
  const v0Secret = material.licenseKeyHmacV0;
  const defaultKeyring = new LicenseKeyring({ "0": v0Secret }, keyCharacters);
  const key = generateLicenseKey("PRD", defaultKeyring);
  const audit = new AuditKeyring(material.auditHmacDk1);
  const probe = Buffer.alloc(32, 0xab);
  return {
    data_key_base64: DATA_KEY.toString("base64"),
    data_key_hex: hex(DATA_KEY),
    license_key_hmac_v0: {
      secret: v0Secret,
      key_signed_with_it: key,
      verifies: checkLicenseKey(key, defaultKeyring).ok,
    },
    audit_dk1: { probe_hash_hex: hex(probe), hmac_hex: hex(audit.sign(probe).signature), kid: audit.sign(probe).kid },
  };
}

// ---------------------------------------------------------------- license files

function licenseFiles() {
  const keyV3 = generateLicenseKey("PRD", keyring);
  const lic = license("lic_0000000000000000000000file", keyV3);
  const perpetual = license("lic_000000000000000000perpetual", generateLicenseKey("PRD", keyring), { expiresAt: null });
  const custom = license("lic_00000000000000000000custom", "ACME-custom.key_2027");
  const em = memoryEm({ licenses: [lic, perpetual, custom], machines: [] });
  const clock = new ManualClock(ISSUED_AT);
  const service = (active: TestSigningKey) =>
    createLicenseService({
      clock,
      events: noEvents,
      catalog,
      keyring,
      dataKey: DATA_KEY,
      signingKeys: signer(active, [KEY_A, KEY_B]),
      licenseFileHmacSecret: FILE_HMAC_SECRET,
      machines: { fingerprintTaken: async () => undefined },
    });
  const issue = (
    l: License,
    opts: { fingerprint?: string; encrypt?: boolean; format?: "ed25519" | "hmac"; ttlSeconds?: number | null },
    active = KEY_A,
  ) =>
    service(active).issueFile(em, TENANT, "key:test", l.id, {
      fingerprint: opts.fingerprint ?? "",
      encrypt: opts.encrypt ?? false,
      format: opts.format ?? "ed25519",
      ttlSeconds: opts.ttlSeconds ?? null,
    });

  const describe = (file: string, licenseKey?: string) => {
    const out: Record<string, unknown> = { file };
    let signed = file;
    if (file.startsWith("licensd1e.")) {
      const [, iv, body] = file.split(".");
      const raw = fromB64url(body);
      signed = decryptLicenseFile(file, licenseKey!);
      // The file key as docs/formats.md derives it, checked by opening the file with it.
      const fileKey = Buffer.from(
        hkdfSync("sha256", Buffer.from(licenseKey!), Buffer.from("licensd1e"), "license file", 32),
      );
      const decipher = createDecipheriv("aes-256-gcm", fileKey, fromB64url(iv))
        .setAAD(Buffer.from("licensd1e"))
        .setAuthTag(raw.subarray(raw.length - 16));
      if (
        Buffer.concat([decipher.update(raw.subarray(0, raw.length - 16)), decipher.final()]).toString("utf8") !== signed
      )
        throw new Error("file key derivation disagrees");
      out.encryption = {
        license_key: licenseKey,
        file_key_hex: hex(fileKey),
        iv_hex: hex(fromB64url(iv)),
        ciphertext_hex: hex(raw.subarray(0, raw.length - 16)),
        tag_hex: hex(raw.subarray(raw.length - 16)),
        plaintext: signed,
      };
    }
    const [prefix, payload, signature] = signed.split(".");
    out.signing_input = `${prefix}.${payload}`;
    out.payload_json = fromB64url(payload).toString("utf8");
    out.signature_hex = hex(fromB64url(signature));
    return out;
  };
  return { keyV3, lic, perpetual, custom, issue, describe };
}

async function licenseFileVectors() {
  const { keyV3, lic, perpetual, custom, issue, describe } = licenseFiles();
  const files = {
    ed25519: (await issue(lic, {})).file,
    perpetual: (await issue(perpetual, {})).file,
    bound: (await issue(lic, { fingerprint: "laptop-7f3a" })).file,
    ttl: (await issue(lic, { ttlSeconds: 30 * 86400 })).file,
    hmac: (await issue(lic, { format: "hmac" })).file,
    encrypted: (await issue(lic, { encrypt: true })).file,
    encryptedCustom: (await issue(custom, { encrypt: true, format: "hmac" })).file,
    byB: (await issue(lic, {}, KEY_B)).file,
  };
  // Files no server issues, signed with the test key, for what verifiers must refuse.
  const payloadOf = (file: string) => JSON.parse(fromB64url(file.split(".")[1]).toString("utf8")) as LicenseFilePayload;
  const signA = (p: unknown) =>
    encodeLicenseFile(ED25519_PREFIX, p as LicenseFilePayload, (input) => sign(null, input, KEY_A.privateKey));
  const [prefix, body, sig] = files.ed25519.split(".");
  const tampered = { ...payloadOf(files.ed25519), features: [...payloadOf(files.ed25519).features, "export"] };
  const flippedIv = (() => {
    const [p, iv, ct] = files.encrypted.split(".");
    const raw = fromB64url(ct);
    raw[0] ^= 1;
    return `${p}.${iv}.${b64url(raw)}`;
  })();
  const A = [KEY_A.kid];
  const AB = [KEY_A.kid, KEY_B.kid];
  const valid = "2027-06-01T00:00:00.000Z";
  const cases: {
    name: string;
    file: string;
    keys?: string[];
    hmac_secret?: string;
    allow_hmac?: boolean;
    license_key?: string;
    fingerprint?: string;
    now: string;
    expect: string;
  }[] = [
    { name: "Ed25519 file", file: files.ed25519, keys: AB, now: valid, expect: "VALID" },
    {
      name: "perpetual (expires_at null)",
      file: files.perpetual,
      keys: A,
      now: "2099-01-01T00:00:00.000Z",
      expect: "VALID",
    },
    { name: "signed by the other published key", file: files.byB, keys: AB, now: valid, expect: "VALID" },
    { name: "time-limited by ttl", file: files.ttl, keys: A, now: "2027-03-31T11:59:59.999Z", expect: "VALID" },
    {
      name: "time-limited by ttl, at its expiry instant",
      file: files.ttl,
      keys: A,
      now: "2027-03-31T12:00:00.000Z",
      expect: "EXPIRED",
    },
    {
      name: "past the license's expiry",
      file: files.ed25519,
      keys: A,
      now: "2028-03-01T00:00:00.000Z",
      expect: "EXPIRED",
    },
    {
      name: "bound to this machine",
      file: files.bound,
      keys: A,
      fingerprint: "laptop-7f3a",
      now: valid,
      expect: "VALID",
    },
    {
      name: "bound to another machine",
      file: files.bound,
      keys: A,
      fingerprint: "laptop-0000",
      now: valid,
      expect: "FINGERPRINT_MISMATCH",
    },
    {
      name: "bound, verified without a fingerprint",
      file: files.bound,
      keys: A,
      now: valid,
      expect: "FINGERPRINT_MISMATCH",
    },
    {
      name: "payload changed after signing",
      file: signA(tampered).split(".").slice(0, 2).concat(sig).join("."),
      keys: A,
      now: valid,
      expect: "BAD_SIGNATURE",
    },
    {
      name: "signature of another file",
      file: `${prefix}.${body}.${files.byB.split(".")[2]}`,
      keys: A,
      now: valid,
      expect: "BAD_SIGNATURE",
    },
    {
      name: "signed by B but naming A's kid",
      file: encodeLicenseFile(ED25519_PREFIX, payloadOf(files.ed25519), (input) => sign(null, input, KEY_B.privateKey)),
      keys: AB,
      now: valid,
      expect: "BAD_SIGNATURE",
    },
    { name: "kid not among the published keys", file: files.byB, keys: A, now: valid, expect: "UNKNOWN_KEY" },
    {
      name: "HMAC file with the shared secret",
      file: files.hmac,
      hmac_secret: FILE_HMAC_SECRET,
      now: valid,
      expect: "VALID",
    },
    {
      name: "HMAC file refused when Ed25519 keys are configured",
      file: files.hmac,
      keys: A,
      hmac_secret: FILE_HMAC_SECRET,
      now: valid,
      expect: "HMAC_NOT_ALLOWED",
    },
    {
      name: "HMAC file allowed explicitly",
      file: files.hmac,
      keys: A,
      hmac_secret: FILE_HMAC_SECRET,
      allow_hmac: true,
      now: valid,
      expect: "VALID",
    },
    {
      name: "HMAC file with a wrong secret",
      file: files.hmac,
      hmac_secret: `${FILE_HMAC_SECRET}!`,
      now: valid,
      expect: "BAD_SIGNATURE",
    },
    { name: "HMAC file without a secret", file: files.hmac, now: valid, expect: "UNKNOWN_KEY" },
    {
      name: "encrypted, opened with the license key",
      file: files.encrypted,
      keys: A,
      license_key: keyV3,
      now: valid,
      expect: "VALID",
    },
    {
      name: "encrypted, opened with the key as typed (lower case, spaces)",
      file: files.encrypted,
      keys: A,
      license_key: ` ${keyV3.toLowerCase()} `,
      now: valid,
      expect: "VALID",
    },
    {
      name: "encrypted HMAC file under a custom key",
      file: files.encryptedCustom,
      hmac_secret: FILE_HMAC_SECRET,
      license_key: "ACME-custom.key_2027",
      now: valid,
      expect: "VALID",
    },
    {
      name: "encrypted, custom keys are case-sensitive",
      file: files.encryptedCustom,
      hmac_secret: FILE_HMAC_SECRET,
      license_key: "acme-custom.key_2027",
      now: valid,
      expect: "DECRYPTION_FAILED",
    },
    {
      name: "encrypted, another license's key",
      file: files.encrypted,
      keys: A,
      license_key: "ACME-custom.key_2027",
      now: valid,
      expect: "DECRYPTION_FAILED",
    },
    {
      name: "encrypted, no license key given",
      file: files.encrypted,
      keys: A,
      now: valid,
      expect: "DECRYPTION_FAILED",
    },
    {
      name: "encrypted, a ciphertext bit flipped",
      file: flippedIv,
      keys: A,
      license_key: keyV3,
      now: valid,
      expect: "DECRYPTION_FAILED",
    },
    { name: "two parts only", file: `${prefix}.${body}`, keys: A, now: valid, expect: "MALFORMED" },
    { name: "unknown prefix", file: `licensd2.${body}.${sig}`, keys: A, now: valid, expect: "MALFORMED" },
    {
      name: "payload is not JSON",
      file: `${prefix}.${b64url("not json")}.${sig}`,
      keys: A,
      now: valid,
      expect: "MALFORMED",
    },
    {
      name: "signed, but v is 2",
      file: signA({ ...payloadOf(files.ed25519), v: 2 }),
      keys: A,
      now: valid,
      expect: "MALFORMED",
    },
    {
      name: "signed, but v is true",
      file: signA({ ...payloadOf(files.ed25519), v: true }),
      keys: A,
      now: valid,
      expect: "MALFORMED",
    },
    {
      name: "signed, but features is not an array",
      file: signA({ ...payloadOf(files.ed25519), features: "reports" }),
      keys: A,
      now: valid,
      expect: "MALFORMED",
    },
    {
      name: "signed, but expires_at is not a date (fails safe)",
      file: signA({ ...payloadOf(files.ed25519), expires_at: "next tuesday" }),
      keys: A,
      now: valid,
      expect: "EXPIRED",
    },
    {
      name: "signed, but carries a typ (a lease is not a license file)",
      file: signA({ ...payloadOf(files.bound), typ: "lease" }),
      keys: A,
      fingerprint: "laptop-7f3a",
      now: valid,
      expect: "MALFORMED",
    },
    {
      name: "signed, but expires_at is a number (fails safe)",
      file: signA({ ...payloadOf(files.ed25519), expires_at: 4102444800 }),
      keys: A,
      now: valid,
      expect: "EXPIRED",
    },
  ];
  const issued = Object.fromEntries(
    Object.entries(files).map(([name, file]) => [
      name,
      describe(file, name === "encrypted" ? keyV3 : name === "encryptedCustom" ? "ACME-custom.key_2027" : undefined),
    ]),
  );
  return { issued, cases };
}

// ---------------------------------------------------------------- leases and offline activation

async function leaseVectors() {
  const key = generateLicenseKey("PRD", keyring);
  const lic = license("lic_00000000000000000000leases", key);
  const shortLived = license("lic_0000000000000000000ends24h", generateLicenseKey("PRD", keyring), {
    expiresAt: new Date("2027-03-01T18:00:00.000Z"),
  });
  const online = machine("mach_0000000000000000000online", lic.id, "laptop-7f3a");
  const offline = machine("mach_000000000000000000offline", lic.id, "vault-9c1e", true);
  const capped = machine("mach_0000000000000000000capped", shortLived.id, "laptop-7f3a");
  const em = memoryEm({ licenses: [lic, shortLived], machines: [online, offline, capped] });
  const clock = new ManualClock(ISSUED_AT);
  const machines = (active: TestSigningKey) =>
    createMachineService({
      clock,
      events: noEvents,
      catalog,
      keyring,
      signingKeys: signer(active, [KEY_A, KEY_B]),
      dataKey: DATA_KEY,
    });
  const lease = async (m: Machine, active = KEY_A) =>
    (await machines(active).leaseFor(em, m.licenseId, m.fingerprint))!.token;
  const tokens = {
    online: await lease(online),
    offline: await lease(offline),
    capped: await lease(capped),
    byB: await lease(online, KEY_B),
  };
  const [prefix, body] = tokens.online.split(".");
  const payload = JSON.parse(fromB64url(body).toString("utf8")) as Record<string, unknown>;
  const forged = encodeLicenseFile(
    ED25519_PREFIX,
    { ...payload, fingerprint: "laptop-0000" } as unknown as LicenseFilePayload,
    () => Buffer.alloc(64),
  );
  const fileContext = licenseFiles();
  const licenseFile = (await fileContext.issue(fileContext.lic, { fingerprint: "laptop-7f3a" })).file;
  const describe = (token: string) => {
    const [p, b, s] = token.split(".");
    return {
      token,
      signing_input: `${p}.${b}`,
      payload_json: fromB64url(b).toString("utf8"),
      signature_hex: hex(fromB64url(s)),
    };
  };
  const soon = "2027-03-01T13:00:00.000Z";
  return {
    issued: Object.fromEntries(Object.entries(tokens).map(([n, t]) => [n, describe(t)])),
    cases: [
      {
        name: "online lease, on its machine",
        token: tokens.online,
        keys: [KEY_A.kid, KEY_B.kid],
        fingerprint: "laptop-7f3a",
        now: soon,
        expect: "VALID",
      },
      {
        name: "signed by the retiring key B, still published",
        token: tokens.byB,
        keys: [KEY_A.kid, KEY_B.kid],
        fingerprint: "laptop-7f3a",
        now: soon,
        expect: "VALID",
      },
      {
        name: "B no longer published",
        token: tokens.byB,
        keys: [KEY_A.kid],
        fingerprint: "laptop-7f3a",
        now: soon,
        expect: "UNKNOWN_KEY",
      },
      {
        name: "online lease, one millisecond before its 24 h end",
        token: tokens.online,
        keys: [KEY_A.kid],
        fingerprint: "laptop-7f3a",
        now: "2027-03-02T11:59:59.999Z",
        expect: "VALID",
      },
      {
        name: "online lease, at its end",
        token: tokens.online,
        keys: [KEY_A.kid],
        fingerprint: "laptop-7f3a",
        now: "2027-03-02T12:00:00.000Z",
        expect: "EXPIRED",
      },
      {
        name: "another machine",
        token: tokens.online,
        keys: [KEY_A.kid],
        fingerprint: "laptop-0000",
        now: soon,
        expect: "FINGERPRINT_MISMATCH",
      },
      {
        name: "offline lease (air-gapped), 365 days",
        token: tokens.offline,
        keys: [KEY_A.kid],
        fingerprint: "vault-9c1e",
        now: "2028-02-29T11:59:59.999Z",
        expect: "VALID",
      },
      {
        name: "lease ends with its license (6 h left)",
        token: tokens.capped,
        keys: [KEY_A.kid],
        fingerprint: "laptop-7f3a",
        now: "2027-03-01T18:00:00.000Z",
        expect: "EXPIRED",
      },
      {
        name: "fingerprint rewritten, signature of the original",
        token: `${forged.split(".").slice(0, 2).join(".")}.${tokens.online.split(".")[2]}`,
        keys: [KEY_A.kid],
        fingerprint: "laptop-0000",
        now: soon,
        expect: "BAD_SIGNATURE",
      },
      {
        name: "a license file (no typ) is not a lease",
        token: licenseFile,
        keys: [KEY_A.kid],
        fingerprint: "laptop-7f3a",
        now: soon,
        expect: "MALFORMED",
      },
      {
        name: "truncated",
        token: `${prefix}.${body}`,
        keys: [KEY_A.kid],
        fingerprint: "laptop-7f3a",
        now: soon,
        expect: "MALFORMED",
      },
    ],
    offline_response_key: key,
  };
}

function offlineRequestVectors() {
  const vinzy = generateLicenseKey("PRD", keyring);
  const now = new Date("2027-03-01T09:30:00.000Z");
  const requests = [
    {
      name: "Vinzy key, typed in lower case (MAC and digest use the normalised key)",
      key: vinzy.toLowerCase(),
      opts: { fingerprint: "vault-9c1e", hostname: "vault", platform: "linux-x64", cores: 4, now },
    },
    {
      name: "custom key, defaults for the optional fields",
      key: "ACME-custom.key_2027",
      opts: { fingerprint: "vault-9c1e", now },
    },
  ].map(({ name, key, opts }) => {
    // The client draws its nonce from WebCrypto; take it from the fixed stream instead.
    const text = createOfflineActivationRequest({ key, ...opts, nonce: nodeCrypto.randomBytes(12) });
    const parsed = parseOfflineActivationRequest(text)!;
    const [, body, mac] = text.split(".");
    return {
      name,
      key,
      text,
      signing_input: parsed.signingInput,
      request_json: fromB64url(body).toString("utf8"),
      mac_hex: hex(fromB64url(mac)),
      key_digest_hex: hex(fromB64url(parsed.request.key_digest)),
    };
  });
  const [first] = requests;
  const [p, body, mac] = first.text.split(".");
  const altered = b64url(first.request_json.replace("vault-9c1e", "vault-0000"));
  const cases = [
    ...requests.map((r) => ({
      name: `${r.name}: MAC verifies with the key`,
      text: r.text,
      key: r.key,
      expect: "VALID",
    })),
    {
      name: "MAC checked with another license's key",
      text: first.text,
      key: "ACME-custom.key_2027",
      expect: "BAD_MAC",
    },
    { name: "fingerprint changed on the way", text: `${p}.${altered}.${mac}`, key: first.key, expect: "BAD_MAC" },
    { name: "not a request file", text: `licensd-req2.${body}.${mac}`, key: first.key, expect: "MALFORMED" },
    {
      name: "v is not 1",
      text: `${p}.${b64url(first.request_json.replace('"v":1', '"v":2'))}.${mac}`,
      key: first.key,
      expect: "MALFORMED",
    },
  ].map((c) => {
    const parsed = parseOfflineActivationRequest(c.text);
    const got = !parsed ? "MALFORMED" : checkOfflineActivationRequest(parsed, c.key) ? "VALID" : "BAD_MAC";
    if (got !== c.expect) throw new Error(`offline request "${c.name}": licensd says ${got}, the vector ${c.expect}`);
    return c;
  });
  return { requests, cases };
}

// ---------------------------------------------------------------- ValidateLicense

async function validationVectors() {
  const keyValid = generateLicenseKey("PRD", keyring);
  const keySuspended = generateLicenseKey("PRD", keyring);
  const lic = license("lic_0000000000000000000000vali", keyValid);
  const suspended = license("lic_00000000000000000suspended", keySuspended, { status: "suspended", expiresAt: null });
  const online = machine("mach_0000000000000000000online", lic.id, "laptop-7f3a");
  const em = memoryEm({ licenses: [lic, suspended], machines: [online] });
  const rowOf = (l: License) => ({
    id: l.id,
    tenant_id: l.tenantId,
    status: l.status,
    expires_ms: l.expiresAt ? String(l.expiresAt.getTime()) : null,
    entitlement_overrides: l.entitlementOverrides,
    agent_overrides: l.agentOverrides,
    max_machines: l.maxMachines,
    code: product.code,
    features: product.features,
    policy_name: policy.name,
    all_features: policy.allFeatures,
    expiration_strategy: policy.expirationStrategy,
    grace_seconds: String(policy.graceSeconds),
    policy_max_machines: policy.maxMachines,
    floating: policy.floating,
    heartbeat_seconds: null,
    heartbeat_grace_seconds: "0",
    require_fingerprint_scope: policy.requireFingerprintScope,
    entitlements: policy.entitlements,
    agent_entitlements: policy.agentEntitlements,
    email: customer.email,
  });
  const db = {
    em: () => em,
    pooled: async (_sql: string, params: unknown[], name?: string) => {
      const rows = (rs: unknown[]) => ({ rows: rs, count: rs.length });
      if (name === "licensd-validate-license")
        return rows([lic, suspended].filter((l) => Buffer.from(l.keyDigest).equals(params[0] as Buffer)).map(rowOf));
      if (name === "licensd-validate-machines") {
        return rows(
          [online]
            .filter((m) => m.licenseId === params[0])
            .map((m) => ({
              fingerprint: m.fingerprint,
              last_ms: String(m.lastHeartbeatAt.getTime()),
              status: m.status,
              offline: m.offline,
            })),
        );
      }
      throw new Error(`unexpected statement ${name}`);
    },
  } as unknown as Database;
  const feed = { onEntry: () => {}, onReconnect: () => {} } as unknown as AuditFeed;
  const clock = new ManualClock(ISSUED_AT);
  const machinesOf = (active: TestSigningKey) =>
    createLicenseMachines({
      db,
      machines: createMachineService({
        clock,
        events: noEvents,
        catalog,
        keyring,
        signingKeys: signer(active, [KEY_A, KEY_B]),
        dataKey: DATA_KEY,
      }),
    });
  const rpc = (active: TestSigningKey) =>
    createLicenseRpc({
      db,
      reads: { run: (read) => read(db.em()) },
      clock,
      signingKeys: signer(active, [KEY_A, KEY_B]),
      validation: createValidationService({ db, clock, keyring, feed, machines: machinesOf(active), events: noEvents }),
      answers: new ValidationAnswers(feed),
      machines: machinesOf(active),
      idempotency: undefined as never,
      licenses: {} as never,
      imports: undefined as never,
      pages: undefined as never,
      // No address is ever blocked here: validation answers as it would for a first look-up.
      keyFailures: {
        refuseIfBlocked: () => undefined,
        failed: async () => undefined,
        guard: <T>(_address: string, lookup: () => Promise<T>) => lookup(),
      } as unknown as KeyFailureLimit,
    });
  const ask = async (
    req: { key: string; productCode?: string; fingerprint?: string; entitlements?: string[]; nonce?: string },
    at: Date,
    active = KEY_A,
  ) => {
    clock.set(at);
    const request = create(ValidateLicenseRequestSchema, req);
    const answer = create(
      ValidateLicenseResponseSchema,
      await rpc(active).validateLicense(request, { values: createContextValues() } as HandlerContext),
    );
    const signingText = validationSigningBytes(answer).toString("utf8");
    return {
      request: toJson(ValidateLicenseRequestSchema, request),
      response_json: toJson(ValidateLicenseResponseSchema, answer),
      response_binary_base64: b64(toBinary(ValidateLicenseResponseSchema, answer)),
      signing_text: signingText,
      kid: answer.kid,
      signature_hex: hex(answer.signature),
    };
  };
  const answers = {
    valid_on_machine: await ask(
      { key: keyValid, productCode: "PRD", fingerprint: "laptop-7f3a", entitlements: ["reports"], nonce: "n-1c0ffee" },
      ISSUED_AT,
    ),
    valid_no_machine: await ask({ key: keyValid }, new Date(ISSUED_AT.getTime() + 250)),
    entitlement_missing: await ask(
      { key: keyValid, entitlements: ["export"], nonce: "n-2" },
      new Date(ISSUED_AT.getTime() + 1),
    ),
    suspended: await ask({ key: keySuspended, nonce: "n-3" }, ISSUED_AT),
    not_found: await ask({ key: generateLicenseKey("PRD", keyring), nonce: "n-4" }, ISSUED_AT),
    format_invalid: await ask({ key: "not a key" }, ISSUED_AT),
    signed_by_b: await ask({ key: keyValid, nonce: "n-5" }, ISSUED_AT, KEY_B),
  };
  type Json = Record<string, unknown>;
  const edit = (name: keyof typeof answers, change: (j: Json) => Json) =>
    change(structuredClone(answers[name].response_json) as Json);
  const cases = [
    ...Object.keys(answers).map((name) => ({
      name,
      answer: name,
      response_json: answers[name as keyof typeof answers].response_json,
      keys: [KEY_A.kid, KEY_B.kid],
      expect: true,
    })),
    {
      name: "valid flipped to false (omitted)",
      answer: "valid_on_machine",
      response_json: edit("valid_on_machine", ({ valid: _, ...j }) => j),
      keys: [KEY_A.kid],
      expect: false,
    },
    {
      name: "not_found turned valid",
      answer: "not_found",
      response_json: edit("not_found", (j) => ({ ...j, valid: true })),
      keys: [KEY_A.kid],
      expect: false,
    },
    {
      name: "a feature added",
      answer: "valid_no_machine",
      response_json: edit("valid_no_machine", (j) => ({ ...j, features: [...(j.features as string[]), "export"] })),
      keys: [KEY_A.kid],
      expect: false,
    },
    {
      name: "nonce replaced (a replayed answer)",
      answer: "valid_on_machine",
      response_json: edit("valid_on_machine", (j) => ({ ...j, nonce: "n-attacker" })),
      keys: [KEY_A.kid],
      expect: false,
    },
    {
      name: "time moved",
      answer: "suspended",
      response_json: edit("suspended", (j) => ({ ...j, time: "2027-03-02T12:00:00Z" })),
      keys: [KEY_A.kid],
      expect: false,
    },
    {
      name: "scope's fingerprint replaced (another machine's answer)",
      answer: "valid_on_machine",
      response_json: edit("valid_on_machine", (j) => ({
        ...j,
        scope: { ...(j.scope as Json), fingerprint: "attacker-box" },
      })),
      keys: [KEY_A.kid],
      expect: false,
    },
    {
      name: "kid changed to the other published key",
      answer: "valid_no_machine",
      response_json: edit("valid_no_machine", (j) => ({ ...j, kid: KEY_B.kid })),
      keys: [KEY_A.kid, KEY_B.kid],
      expect: false,
    },
    {
      name: "kid not published",
      answer: "signed_by_b",
      response_json: answers.signed_by_b.response_json,
      keys: [KEY_A.kid],
      expect: false,
    },
  ];
  return { answers, cases };
}

// ---------------------------------------------------------------- audit log, Merkle tree, checkpoints

function auditVectors() {
  const payloads: { type: string; subject: string; actor: string; payload: { [k: string]: JsonValue } }[] = [
    {
      type: "tenant.created",
      subject: TENANT,
      actor: "super_admin",
      payload: { name: "Acme", metadata: { b: "2", a: "1" } },
    },
    {
      type: "license.created",
      subject: "lic_0000000000000000000000file",
      actor: "key:key_0000000000000000000000test",
      payload: { key_prefix: "PRD-DAAAA…", max_machines: null, policy_id: policy.id },
    },
    {
      type: "machine.activated",
      subject: "mach_0000000000000000000online",
      actor: "license:lic_0000000000000000000000file",
      payload: {
        license_id: "lic_0000000000000000000000file",
        fingerprint: "laptop-7f3a",
        hostname: 'Zoë\'s "laptop"\n',
        platform: "",
        ip: "127.0.0.1",
        offline: false,
      },
    },
    {
      type: "anomaly.detected",
      subject: "anm_0000000000000000000000test",
      actor: "system",
      payload: {
        // biome-ignore lint/suspicious/noApproximativeNumericConstant: a vector of the number as written, not of π
        z_score: 3.1415926535,
        mean: 0.000001,
        stddev: 1.5e-7,
        total: 1e21,
        counts: [0, -1, 2.5],
        é: "accent",
        "\u{1F600}": "astral key",
        "\uFF61": "bmp key",
      },
    },
    {
      type: "license.suspended",
      subject: "lic_0000000000000000000000file",
      actor: "key:key_0000000000000000000000test",
      payload: {},
    },
    {
      type: "machine.deleted",
      subject: "",
      actor: "system",
      payload: { reason: "tab\there, nul-free \u0001 control", through_seq: 4 },
    },
    { type: "audit.retention.cut", subject: TENANT, actor: "system", payload: { through_seq: 2, removed: 2 } },
  ];
  const dk1Only = new AuditKeyring(DK1);
  const rotated = new AuditKeyring(DK1, { [AUDIT_KEY_ID]: AUDIT_KEY });
  const entries: AuditEntry[] = [];
  let prev: Buffer = GENESIS_HASH;
  payloads.forEach((p, i) => {
    const seq = i + 1;
    const occurredAt = new Date(ISSUED_AT.getTime() + i * 60_000 + (i % 3) * 7); // some with milliseconds, some without
    const fields = {
      tenantId: TENANT,
      seq,
      id: `evt_${String(seq).padStart(26, "0")}`,
      ...p,
      occurredAt,
      prevHash: prev,
    };
    const hash = entryHash(fields);
    const { kid, signature } = (seq <= 4 ? dk1Only : rotated).sign(hash);
    entries.push({ ...fields, prevHash: prev, hash, kid, signature });
    prev = hash;
  });
  /** The text entryHash hashes (the same RFC 8785 library), checked against the hash. */
  const canonicalOf = (e: AuditEntry) => {
    const text = canonicalize({
      tenant_id: e.tenantId,
      seq: e.seq,
      id: e.id,
      type: e.type,
      subject: e.subject,
      actor: e.actor,
      payload: e.payload as JsonValue,
      occurred_at: e.occurredAt.toISOString(),
      prev_hash: hex(e.prevHash),
    })!;
    if (!sha256(text).equals(e.hash)) throw new Error(`entry ${e.seq}: canonical text does not give its hash`);
    return text;
  };
  // The tree as the server stores it: every perfect subtree.
  const nodes = new Map<string, Buffer>();
  for (const [i, e] of entries.entries()) nodes.set(`0:${i}`, leafHash(e.hash));
  for (let level = 1; 2 ** level <= entries.length; level++) {
    for (let i = 0; (i + 1) * 2 ** level <= entries.length; i++)
      nodes.set(
        `${level}:${i}`,
        nodeHash(nodes.get(`${level - 1}:${2 * i}`)!, nodes.get(`${level - 1}:${2 * i + 1}`)!),
      );
  }
  const node: PerfectNode = (level, index) => nodes.get(`${level}:${index}`)!;
  const n = entries.length;
  const roots = Array.from({ length: n + 1 }, (_, size) => ({
    tree_size: size,
    root_hex: hex(size === 0 ? EMPTY_ROOT : rootHash(size, node)),
  }));
  const checkpoint = (size: number, signTime: Date, key: TestSigningKey) => {
    const root = size === 0 ? EMPTY_ROOT : rootHash(size, node);
    const signedText = checkpointText(TENANT, size, root, signTime);
    const signature = sign(null, Buffer.from(signedText), key.privateKey);
    const cp = { tenantId: TENANT, treeSize: size, rootHash: root, signTime, kid: key.kid, signature, signedText };
    return {
      tree_size: size,
      signed_text: signedText,
      kid: key.kid,
      signature_hex: hex(signature),
      api_json: toJson(CheckpointSchema, checkpointToProto(cp)),
    };
  };
  const checkpoints = [
    checkpoint(n, new Date("2027-03-01T12:30:00.000Z"), KEY_A),
    checkpoint(4, new Date("2027-03-01T12:03:30.125Z"), KEY_A),
    checkpoint(0, new Date("2027-03-01T11:00:00.000Z"), KEY_B),
  ];
  type CpJson = Record<string, unknown>;
  const edited = (i: number, change: (j: CpJson) => CpJson) =>
    change(structuredClone(checkpoints[i].api_json) as CpJson);
  const checkpointCases = [
    ...checkpoints.map((c, i) => ({
      name: `checkpoint of size ${c.tree_size}`,
      api_json: checkpoints[i].api_json,
      keys: [KEY_A.kid, KEY_B.kid],
      expect: true,
    })),
    {
      name: "tree size changed",
      api_json: edited(0, (j) => ({ ...j, treeSize: "6" })),
      keys: [KEY_A.kid],
      expect: false,
    },
    {
      name: "root of another size",
      api_json: edited(0, (j) => ({ ...j, rootHash: b64(Buffer.from(roots[6].root_hex, "hex")) })),
      keys: [KEY_A.kid],
      expect: false,
    },
    {
      name: "sign time changed by 1 ms",
      api_json: edited(1, (j) => ({ ...j, signTime: "2027-03-01T12:03:30.126Z" })),
      keys: [KEY_A.kid],
      expect: false,
    },
    {
      name: "tenant changed",
      api_json: edited(0, (j) => ({ ...j, tenantId: "ten_0000000000000000000000othr" })),
      keys: [KEY_A.kid],
      expect: false,
    },
    { name: "kid not published", api_json: checkpoints[2].api_json, keys: [KEY_A.kid], expect: false },
  ];
  const inclusion: {
    seq: number;
    leaf_index: number;
    tree_size: number;
    entry_hash_hex: string;
    proof_hex: string[];
    expect: boolean;
    name?: string;
  }[] = [];
  for (const size of [1, 4, 5, n]) {
    for (let seq = 1; seq <= size; seq++) {
      inclusion.push({
        seq,
        leaf_index: seq - 1,
        tree_size: size,
        entry_hash_hex: hex(entries[seq - 1].hash),
        proof_hex: inclusionProof(seq - 1, size, node).map(hex),
        expect: true,
      });
    }
  }
  const good = inclusion.find((p) => p.tree_size === n && p.seq === 3)!;
  inclusion.push(
    { ...good, name: "wrong leaf index", leaf_index: 3, expect: false },
    { ...good, name: "another entry's hash", entry_hash_hex: hex(entries[3].hash), expect: false },
    {
      ...good,
      name: "a proof hash changed",
      proof_hex: [good.proof_hex[0].replace(/^./, (c) => (c === "0" ? "1" : "0")), ...good.proof_hex.slice(1)],
      expect: false,
    },
    { ...good, name: "proof one hash short", proof_hex: good.proof_hex.slice(0, -1), expect: false },
    { ...good, name: "leaf index past the tree", leaf_index: n, expect: false },
  );
  const consistency: { old_size: number; new_size: number; proof_hex: string[]; expect: boolean; name?: string }[] = [];
  for (let m = 1; m <= n; m++)
    for (let k = m; k <= n; k++)
      consistency.push({ old_size: m, new_size: k, proof_hex: consistencyProof(m, k, node).map(hex), expect: true });
  const c = consistency.find((x) => x.old_size === 3 && x.new_size === n)!;
  consistency.push(
    {
      ...c,
      name: "a proof hash changed",
      proof_hex: [c.proof_hex[0].replace(/^./, (ch) => (ch === "0" ? "1" : "0")), ...c.proof_hex.slice(1)],
      expect: false,
    },
    { ...c, name: "claims another old size", old_size: 2, expect: false },
    { ...c, name: "empty proof", proof_hex: [], expect: false },
  );
  const cut = (() => {
    const at = new Date("2027-03-02T00:00:00.000Z");
    const text = cutText(TENANT, 2, entries[1].hash, at);
    return {
      seq: 2,
      hash_hex: hex(entries[1].hash),
      cut_at: at.toISOString(),
      signed_text: text,
      kid: KEY_A.kid,
      signature_hex: hex(sign(null, Buffer.from(text), KEY_A.privateKey)),
    };
  })();
  // Changed entries, each replacing its seq in the chain; a verifier holding the HMAC keys names the first bad seq and
  // why.
  const apiJson = (e: AuditEntry) => toJson(AuditEventSchema, auditEventToProto(e)) as Record<string, unknown>;
  const relinked = (() => {
    const e = entries[3];
    const fields = { ...e, prevHash: entries[1].hash };
    const hash = entryHash(fields);
    return { ...fields, hash, ...dk1Only.sign(hash) };
  })();
  const tamperedEntries = [
    {
      name: "payload changed",
      seq: 1,
      api_json: { ...apiJson(entries[0]), payload: { name: "Acme Corp", metadata: { a: "1", b: "2" } } },
      expect: "HASH_MISMATCH",
    },
    {
      name: "subject removed (read as the empty string)",
      seq: 2,
      api_json: (({ subject: _, ...rest }) => rest)(apiJson(entries[1])),
      expect: "HASH_MISMATCH",
    },
    {
      name: "occurred one millisecond later",
      seq: 3,
      api_json: { ...apiJson(entries[2]), occurTime: new Date(entries[2].occurredAt.getTime() + 1).toISOString() },
      expect: "HASH_MISMATCH",
    },
    {
      name: "linked to entry 2 (hash and HMAC recomputed)",
      seq: 4,
      api_json: apiJson(relinked),
      expect: "BROKEN_LINK",
    },
    {
      name: "HMAC attributed to another key",
      seq: 5,
      api_json: { ...apiJson(entries[4]), kid: "dk1" },
      expect: "BAD_SIGNATURE",
    },
  ];
  return {
    tenant_id: TENANT,
    hmac_keys_hex: { dk1: hex(DK1), [AUDIT_KEY_ID]: hex(AUDIT_KEY) },
    entries: entries.map((e) => ({
      seq: e.seq,
      canonical_json: canonicalOf(e),
      hash_hex: hex(e.hash),
      kid: e.kid,
      signature_hex: hex(e.signature),
      leaf_hash_hex: hex(leafHash(e.hash)),
      api_json: toJson(AuditEventSchema, auditEventToProto(e)),
    })),
    tampered_entries: tamperedEntries,
    roots,
    checkpoints,
    checkpoint_cases: checkpointCases,
    inclusion_proofs: inclusion,
    consistency_proofs: consistency,
    retention_cut: cut,
  };
}

// ---------------------------------------------------------------- RFC 6962 known answers (Certificate Transparency's)

function merkleVectors() {
  const leaves = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
  const nodes = new Map<string, Buffer>();
  for (const [i, l] of leaves.entries()) nodes.set(`0:${i}`, leafHash(Buffer.from(l, "hex")));
  for (let level = 1; 2 ** level <= leaves.length; level++) {
    for (let i = 0; (i + 1) * 2 ** level <= leaves.length; i++)
      nodes.set(
        `${level}:${i}`,
        nodeHash(nodes.get(`${level - 1}:${2 * i}`)!, nodes.get(`${level - 1}:${2 * i + 1}`)!),
      );
  }
  const node: PerfectNode = (level, index) => nodes.get(`${level}:${index}`)!;
  return {
    source: "Certificate Transparency reference implementation (merkle_tree_test): leaf data and roots",
    empty_root_hex: hex(EMPTY_ROOT),
    leaves_hex: leaves,
    leaf_hashes_hex: leaves.map((l) => hex(leafHash(Buffer.from(l, "hex")))),
    roots: leaves.map((_, i) => ({ tree_size: i + 1, root_hex: hex(rootHash(i + 1, node)) })),
  };
}

// ---------------------------------------------------------------- sealing and digests

function sealingVectors() {
  const lic = "lic_0000000000000000000000file";
  const licenseKey = "ACME-custom.key_2027";
  const pkcs8 = KEY_A.privateKey.export({ format: "der", type: "pkcs8" });
  const sealedKey = seal(DATA_KEY, Buffer.from(licenseKey), lic);
  const sealedSigning = seal(DATA_KEY, pkcs8, KEY_A.kid);
  const flipped = Buffer.from(sealedKey);
  flipped[flipped.length - 1] ^= 1;
  const opens = (sealed: Buffer, aad: string) => {
    try {
      open(DATA_KEY, sealed, aad);
      return true;
    } catch {
      return false;
    }
  };
  const cases = [
    {
      name: "license key, AAD = license id",
      sealed_hex: hex(sealedKey),
      aad: lic,
      plaintext_hex: hex(Buffer.from(licenseKey)),
      expect: true,
    },
    {
      name: "signing key (PKCS#8 DER), AAD = kid",
      sealed_hex: hex(sealedSigning),
      aad: KEY_A.kid,
      plaintext_hex: hex(pkcs8),
      expect: true,
    },
    {
      name: "license key under another license's id",
      sealed_hex: hex(sealedKey),
      aad: "lic_0000000000000000000000othr",
      expect: false,
    },
    { name: "a ciphertext bit flipped", sealed_hex: hex(flipped), aad: lic, expect: false },
  ];
  for (const c of cases)
    if (opens(Buffer.from(c.sealed_hex, "hex"), c.aad) !== c.expect)
      throw new Error(`sealing "${c.name}": licensd disagrees`);
  const apiKey = `lsk_${b64url(Buffer.from("test-only api key secret 32bytes"))}`;
  return { cases, api_key: { secret: apiKey, digest_hex: hex(sha256(apiKey)) } };
}

// ---------------------------------------------------------------- webhook signatures (Standard Webhooks)

function webhookVectors() {
  // Key bytes from fixed labels (not the shared stream, so no other section moves).
  const keyOf = (label: string) => createHash("sha256").update(`licensd test webhook secret ${label}`).digest();
  const current = `whsec_${b64(keyOf("current"))}`;
  const previous = `whsec_${b64(keyOf("previous"))}`;
  const sign = (secret: string, id: string, ts: number, body: string) =>
    `v1,${createHmac("sha256", Buffer.from(secret.slice(6), "base64"))
      .update(`${id}.${ts}.${body}`)
      .digest("base64")}`;
  const id = "evt_0000000000000000000000hook";
  const ts = 1_798_761_600; // 2027-01-01T00:00:00Z
  const payload = JSON.stringify({
    type: "license.created",
    timestamp: "2027-01-01T00:00:00Z",
    data: { license_id: "lic_0000000000000000000000hook", name: "Zoë's license ✓" },
  });
  const good = sign(current, id, ts, payload);
  const headers = (signature: string, at = ts, msgId = id) => ({
    "webhook-id": msgId,
    "webhook-timestamp": String(at),
    "webhook-signature": signature,
  });
  const base = { secret: current, payload, headers: headers(good), now: ts };
  const cases = [
    { name: "valid", ...base, expect: "OK" },
    { name: "valid, received 300 s after signing (the edge)", ...base, now: ts + 300, expect: "OK" },
    { name: "valid, received 300 s before signing (clock skew edge)", ...base, now: ts - 300, expect: "OK" },
    {
      name: "two signatures during rotation: previous and current secret, checked with the current",
      ...base,
      headers: headers(`${sign(previous, id, ts, payload)} ${good}`),
      expect: "OK",
    },
    {
      name: "two signatures during rotation, checked with the previous secret",
      ...base,
      secret: previous,
      headers: headers(`${sign(previous, id, ts, payload)} ${good}`),
      expect: "OK",
    },
    {
      name: "an unknown version and a bad v1 before the valid v1",
      ...base,
      headers: headers(`v1a,${b64(Buffer.alloc(64, 1))} v1,${b64(Buffer.alloc(32))} ${good}`),
      expect: "OK",
    },
    { name: "body tampered", ...base, payload: payload.replace("created", "deleted"), expect: "BAD_SIGNATURE" },
    {
      name: "webhook-id tampered",
      ...base,
      headers: headers(good, ts, `${id.slice(0, -1)}x`),
      expect: "BAD_SIGNATURE",
    },
    {
      name: "webhook-timestamp tampered (within tolerance)",
      ...base,
      headers: headers(good, ts + 1),
      expect: "BAD_SIGNATURE",
    },
    { name: "another secret", ...base, secret: previous, expect: "BAD_SIGNATURE" },
    {
      name: "only an unknown signature version",
      ...base,
      headers: headers(`v2,${good.slice(3)}`),
      expect: "BAD_SIGNATURE",
    },
    { name: "received 301 s after signing", ...base, now: ts + 301, expect: "TIMESTAMP_OUT_OF_TOLERANCE" },
    { name: "signed 301 s in the future", ...base, now: ts - 301, expect: "TIMESTAMP_OUT_OF_TOLERANCE" },
    {
      name: "no webhook-signature",
      ...base,
      headers: { "webhook-id": id, "webhook-timestamp": String(ts) },
      expect: "MISSING_HEADERS",
    },
    { name: "secret without whsec_", ...base, secret: current.slice(6), expect: "BAD_SECRET" },
    {
      name: "webhook-timestamp not whole seconds",
      ...base,
      headers: { ...headers(good), "webhook-timestamp": `${ts}.5` },
      expect: "MALFORMED",
    },
  ];
  for (const c of cases) {
    const r = verifyWebhook(c.payload, c.headers, c.secret, { now: c.now * 1000 });
    if ((r.ok ? "OK" : r.reason) !== c.expect) throw new Error(`webhooks "${c.name}": the client disagrees`);
  }
  return {
    about: [
      "Standard Webhooks (docs/formats.md, Webhook signatures): verify each case's payload (its UTF-8 bytes),",
      "headers and secret at `now` (Unix seconds) with a 300 s tolerance; `expect` is OK or the refusal reason.",
    ],
    tolerance_seconds: 300,
    secrets: { current, previous },
    cases,
  };
}

// ---------------------------------------------------------------- assemble

async function build() {
  const vectors = {
    about: [
      "Known answers for docs/formats.md, written by scripts/test-vectors.ts from licensd's own code.",
      "EVERY KEY AND SECRET HERE IS TEST-ONLY AND PUBLIC: never configure one of them in a real deployment.",
      "Regenerate with `npx tsx scripts/test-vectors.ts` after a format changes; tests fail until the file matches the code.",
    ],
    keys: {
      test_only: true,
      ed25519: [KEY_A, KEY_B].map((k) => ({
        kid: k.kid,
        seed_hex: hex(k.seed),
        public_key_hex: hex(k.publicKey),
        public_key_base64: b64(k.publicKey),
      })),
      data_key_hex: hex(DATA_KEY),
      license_key_hmac_keyring: KEYRING_SECRETS,
      license_file_hmac_secret: FILE_HMAC_SECRET,
      audit_hmac_keys_hex: { [AUDIT_KEY_ID]: hex(AUDIT_KEY) },
    },
    derivations: derivations(),
    license_keys: licenseKeys(),
    license_files: await licenseFileVectors(),
    leases: await leaseVectors(),
    offline_activation: offlineRequestVectors(),
    validate_license: await validationVectors(),
    audit: auditVectors(),
    merkle: merkleVectors(),
    sealing: sealingVectors(),
    webhooks: webhookVectors(),
  };
  return `${JSON.stringify(vectors, null, 2)}\n`;
}

const text = await build();
if (process.argv.includes("--check")) {
  let current = "";
  try {
    current = readFileSync(OUT, "utf8");
  } catch {
    // missing: reported below
  }
  if (current !== text) {
    process.stderr.write(
      `${path.relative(ROOT, OUT)} is not what the code produces: run \`npx tsx scripts/test-vectors.ts\` and review the diff\n`,
    );
    process.exit(1);
  }
} else {
  writeFileSync(OUT, text);
  process.stdout.write(`wrote ${path.relative(ROOT, OUT)}\n`);
}
