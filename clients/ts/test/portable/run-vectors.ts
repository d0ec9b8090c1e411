/*
 * docs/test-vectors.json through @licensd/client's verifiers with nothing but the
 * platform: no Node APIs, no Buffer. verify-portability.test.ts bundles this file with
 * esbuild and runs it in headless Chromium and under the machine's Node 20.
 */
import vectors from "../../../../docs/test-vectors.json" with { type: "json" };
import {
  createOfflineActivationRequest,
  ed25519Backend,
  leafHash,
  verifyCheckpoint,
  verifyConsistency,
  verifyInclusion,
  verifyLease,
  verifyLicenseFile,
  verifyValidationResponse,
} from "../../src/index.js";

const hex = (s: string) => Uint8Array.from(s.match(/../g) ?? [], (b) => Number.parseInt(b, 16));
const fromBase64Url = (s: string) =>
  Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));

export interface Report {
  backend: string;
  secureContext: boolean | undefined;
  checked: number;
  failures: string[];
}

export async function runVectors(): Promise<Report> {
  const v = vectors as unknown as typeof vectors & Record<string, never>;
  const published = (kids: string[] = []) =>
    v.keys.ed25519.filter((k) => kids.includes(k.kid)).map((k) => ({ kid: k.kid, publicKey: hex(k.public_key_hex) }));
  const failures: string[] = [];
  let checked = 0;
  const check = (name: string, got: unknown, want: unknown) => {
    checked++;
    if (got !== want) failures.push(`${name}: got ${String(got)}, want ${String(want)}`);
  };

  for (const c of v.license_files.cases as {
    name: string;
    file: string;
    keys?: string[];
    hmac_secret?: string;
    allow_hmac?: boolean;
    license_key?: string;
    fingerprint?: string;
    now: string;
    expect: string;
  }[]) {
    const r = await verifyLicenseFile(c.file, {
      keys: published(c.keys),
      hmacSecret: c.hmac_secret,
      allowHmac: c.allow_hmac,
      licenseKey: c.license_key,
      fingerprint: c.fingerprint,
      now: new Date(c.now),
    });
    check(`license file: ${c.name}`, r.code, c.expect);
  }
  for (const c of v.leases.cases) {
    const r = await verifyLease(c.token, published(c.keys), { fingerprint: c.fingerprint, now: new Date(c.now) });
    check(`lease: ${c.name}`, r.code, c.expect);
  }
  for (const r of v.offline_activation.requests) {
    const req = JSON.parse(r.request_json) as Record<string, string & number>;
    const text = createOfflineActivationRequest({
      key: r.key,
      fingerprint: req.fingerprint,
      hostname: req.hostname || undefined,
      platform: req.platform || undefined,
      cores: req.cores || undefined,
      now: new Date(req.created_at),
      nonce: fromBase64Url(req.nonce),
    });
    check(`request file: ${r.name}`, text, r.text);
  }
  const answers = v.validate_license.answers as Record<
    string,
    { request: { nonce?: string }; response_json: { time: string } }
  >;
  for (const c of v.validate_license.cases) {
    const a = answers[c.answer]!;
    const r = await verifyValidationResponse(c.response_json as never, {
      keys: published(c.keys),
      nonce: a.request.nonce ?? "",
      now: new Date(a.response_json.time),
    });
    check(`ValidateLicense answer: ${c.name}`, r.verified, c.expect);
  }
  for (const c of v.audit.checkpoint_cases) {
    check(`checkpoint: ${c.name}`, (await verifyCheckpoint(c.api_json as never, published(c.keys))).verified, c.expect);
  }
  const root = (size: number) => hex(v.audit.roots.find((r) => r.tree_size === size)!.root_hex);
  for (const p of v.audit.inclusion_proofs) {
    const ok = verifyInclusion(
      leafHash(hex(p.entry_hash_hex)),
      p.leaf_index,
      p.tree_size,
      p.proof_hex.map(hex),
      root(p.tree_size),
    );
    check(`inclusion ${p.seq} in ${p.tree_size}`, ok, p.expect);
  }
  for (const p of v.audit.consistency_proofs) {
    const ok = verifyConsistency(p.old_size, p.new_size, p.proof_hex.map(hex), root(p.old_size), root(p.new_size));
    check(`consistency ${p.old_size} → ${p.new_size}`, ok, p.expect);
  }
  return {
    backend: await ed25519Backend(),
    secureContext: (globalThis as { isSecureContext?: boolean }).isSecureContext,
    checked,
    failures,
  };
}
