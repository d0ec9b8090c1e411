import { generateKeyPairSync, sign } from "node:crypto";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  ED25519_PREFIX,
  encodeLicenseFile,
  encryptLicenseFile,
  HMAC_PREFIX,
  hmacLicenseFile,
  type LicenseFilePayload,
} from "../../src/licensing/license-file.js";
import { verifyLicenseFile, type VerifyOptions } from "../../src/licensing/license-file-verify.js";

const { publicKey, privateKey } = generateKeyPairSync("ed25519");
const raw = publicKey.export({ format: "der", type: "spki" }).subarray(12);
const other = generateKeyPairSync("ed25519");
const keys = [{ kid: "sk_test", publicKey: raw }];
const SECRET = "a-shared-secret-of-at-least-32-characters";
const LICENSE_KEY = "PRD-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-FFFFF-GGGGG";

const payload = (over: Partial<LicenseFilePayload> = {}): LicenseFilePayload => ({
  v: 1,
  license_id: "lic_x",
  tenant_id: "ten_x",
  product: { code: "PRD", name: "Product" },
  customer: { name: "Jane", email: "jane@example.com", organization: "" },
  plan: "pro",
  features: ["reports"],
  entitlements: { reports: true, seats: 5 },
  agents: { coder: { enabled: true, token_limit: 1000, model_tier: "basic" } },
  max_machines: 3,
  max_users: 0,
  issued_at: "2026-11-23T10:00:00.000Z",
  expires_at: "2099-01-01T00:00:00.000Z",
  kid: "sk_test",
  ...over,
});
const signed = (p: LicenseFilePayload, key = privateKey) =>
  encodeLicenseFile(ED25519_PREFIX, p, (input) => sign(null, input, key));
const tamper = (file: string) => {
  const [prefix, body, sig] = file.split(".");
  const json = JSON.parse(Buffer.from(body, "base64url").toString());
  json.features.push("enterprise-everything");
  return `${prefix}.${Buffer.from(JSON.stringify(json)).toString("base64url")}.${sig}`;
};

/** Every case, with what both verifiers must answer. */
const cases: { name: string; file: string; opts: VerifyOptions; code: string }[] = [
  { name: "valid", file: signed(payload()), opts: { keys }, code: "VALID" },
  { name: "perpetual", file: signed(payload({ expires_at: null })), opts: { keys }, code: "VALID" },
  { name: "tampered payload", file: tamper(signed(payload())), opts: { keys }, code: "BAD_SIGNATURE" },
  { name: "signed by another key", file: signed(payload(), other.privateKey), opts: { keys }, code: "BAD_SIGNATURE" },
  { name: "unknown kid", file: signed(payload({ kid: "sk_other" })), opts: { keys }, code: "UNKNOWN_KEY" },
  { name: "expired", file: signed(payload({ expires_at: "2020-01-01T00:00:00Z" })), opts: { keys }, code: "EXPIRED" },
  {
    name: "unparseable date fails safe",
    file: signed(payload({ expires_at: "next tuesday" })),
    opts: { keys },
    code: "EXPIRED",
  },
  {
    name: "date of the wrong type fails safe",
    file: signed(payload({ expires_at: 4102444800 as unknown as string })),
    opts: { keys },
    code: "EXPIRED",
  },
  { name: "garbage", file: "licensd1.not-json.sig", opts: { keys }, code: "MALFORMED" },
  {
    name: "malformed public key (31 bytes)",
    file: signed(payload()),
    opts: { keys: [{ kid: "sk_test", publicKey: raw.subarray(1) }] },
    code: "BAD_SIGNATURE",
  },
  { name: "other format", file: "DTLIC2:abc", opts: { keys }, code: "MALFORMED" },
  {
    name: "bound to this machine",
    file: signed(payload({ fingerprint: "fp-1" })),
    opts: { keys, fingerprint: "fp-1" },
    code: "VALID",
  },
  {
    name: "bound to another machine",
    file: signed(payload({ fingerprint: "fp-1" })),
    opts: { keys, fingerprint: "fp-2" },
    code: "FINGERPRINT_MISMATCH",
  },
  {
    name: "hmac with the secret",
    file: encodeLicenseFile(HMAC_PREFIX, payload({ kid: "hmac" }), hmacLicenseFile(SECRET)),
    opts: { hmacSecret: SECRET },
    code: "VALID",
  },
  {
    name: "hmac refused when Ed25519 keys are configured",
    file: encodeLicenseFile(HMAC_PREFIX, payload({ kid: "hmac" }), hmacLicenseFile(SECRET)),
    opts: { keys, hmacSecret: SECRET },
    code: "HMAC_NOT_ALLOWED",
  },
  {
    name: "hmac allowed explicitly",
    file: encodeLicenseFile(HMAC_PREFIX, payload({ kid: "hmac" }), hmacLicenseFile(SECRET)),
    opts: { keys, hmacSecret: SECRET, allowHmac: true },
    code: "VALID",
  },
  {
    name: "hmac with a wrong secret",
    file: encodeLicenseFile(HMAC_PREFIX, payload({ kid: "hmac" }), hmacLicenseFile(SECRET)),
    opts: { hmacSecret: `${SECRET}x` },
    code: "BAD_SIGNATURE",
  },
  {
    name: "encrypted, with the license key",
    file: encryptLicenseFile(signed(payload()), LICENSE_KEY),
    opts: { keys, licenseKey: LICENSE_KEY },
    code: "VALID",
  },
  {
    name: "encrypted, with a wrong license key",
    file: encryptLicenseFile(signed(payload()), LICENSE_KEY),
    opts: { keys, licenseKey: `${LICENSE_KEY}X` },
    code: "DECRYPTION_FAILED",
  },
  {
    name: "encrypted, without a key",
    file: encryptLicenseFile(signed(payload()), LICENSE_KEY),
    opts: { keys },
    code: "DECRYPTION_FAILED",
  },
];

describe("offline license files", () => {
  it.each(cases)("TypeScript verifier: $name → $code", ({ file, opts, code }) => {
    const r = verifyLicenseFile(file, opts);
    expect(r.code).toBe(code);
    expect(r.valid).toBe(code === "VALID");
    expect(r.hasFeature("reports")).toBe(code === "VALID");
  });

  it("the Python verifier gives the same answer for every case", () => {
    const input = cases
      .map((c) =>
        JSON.stringify({
          file: c.file,
          keys: Object.fromEntries((c.opts.keys ?? []).map((k) => [k.kid, Buffer.from(k.publicKey).toString("hex")])),
          hmac_secret: c.opts.hmacSecret,
          allow_hmac: c.opts.allowHmac ?? false,
          license_key: c.opts.licenseKey,
          fingerprint: c.opts.fingerprint,
        }),
      )
      .join("\n");
    const res = spawnSync("/usr/bin/python3", [path.join(import.meta.dirname, "verify_license_file.py")], {
      input: `${input}\n`,
      encoding: "utf8",
    });
    expect(res.status, res.stderr).toBe(0);
    const answers = res.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { code: string; reports: boolean });
    expect(answers.map((a) => a.code)).toEqual(cases.map((c) => c.code));
    expect(answers.map((a) => a.reports)).toEqual(cases.map((c) => c.code === "VALID"));
  });
});
