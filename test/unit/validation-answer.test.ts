import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { ValidateLicenseResponseSchema } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { validationSigningBytes } from "../../src/licensing/license.rpc.js";
import { ValidationAnswers } from "../../src/licensing/validation-answer.js";
import type { LicenseSnapshot, Validation } from "../../src/licensing/validation.service.js";
import type { TenantChanges } from "../../src/platform/tenant-cache.js";

const snapshot = (tenantId: string): LicenseSnapshot => ({
  id: "lic_1",
  tenantId,
  status: "active",
  expiresAt: new Date("2030-01-01T00:00:00Z"),
  productCode: "PRD",
  productFeatures: [],
  policyName: "pro",
  allFeatures: false,
  expirationStrategy: "restrict_access",
  graceSeconds: 0,
  maxMachines: 2,
  floating: true,
  heartbeatSeconds: null,
  heartbeatGraceSeconds: 0,
  requireFingerprintScope: false,
  entitlements: [{ feature: "reports", enabled: true }],
  agents: [],
  customerEmail: "a@example.com",
});

const valid = (s: LicenseSnapshot): Validation => ({
  snapshot: s,
  valid: true,
  code: "VALID",
  detail: "the license is valid",
  license: { ...s, effectiveStatus: "active" },
  features: ["reports"],
  entitlements: s.entitlements,
  agents: [],
});

function feed() {
  const listeners: ((tenantId: string) => void)[] = [];
  const changes: TenantChanges = { onEntry: (l) => listeners.push(l), onReconnect: () => undefined };
  return {
    changes,
    entry: (t: string) => {
      for (const l of listeners) l(t);
    },
  };
}

const question = { key: "PRD-KEY", productCode: "", fingerprint: "", entitlements: ["reports"] };

describe("ValidationAnswers", () => {
  it("signs the same bytes validationSigningBytes computes for the whole response, with and without lease and nonce", () => {
    const answers = new ValidationAnswers(feed().changes);
    const answer = answers.of(question, valid(snapshot("ten_a")));
    for (const [nonce, lease, at] of [
      ["n-1", "", "2026-12-06T01:02:03.456Z"],
      ["", "lease.token", "2026-12-06T01:02:03.000Z"],
    ] as const) {
      const time = new Date(at);
      const response = create(ValidateLicenseResponseSchema, {
        ...answer.base,
        nonce,
        lease,
        time: timestampFromDate(time),
      });
      expect(answers.signingText(answer, nonce, time, lease)).toBe(validationSigningBytes(response).toString("utf8"));
    }
  });

  it("reuses an answer while the validation says the same of the same snapshot, and not after the tenant changed", () => {
    const f = feed();
    const answers = new ValidationAnswers(f.changes);
    const s = snapshot("ten_a");
    const first = answers.of(question, valid(s));
    expect(answers.of(question, valid(s))).toBe(first);
    expect(answers.of(question, { ...valid(s), valid: false, code: "SUSPENDED", detail: "x" })).not.toBe(first);
    const again = answers.of(question, valid(s));
    f.entry("ten_b"); // another tenant's change keeps it
    expect(answers.of(question, valid(s))).toBe(again);
    f.entry("ten_a");
    expect(answers.of(question, valid(s))).not.toBe(again);
  });
});
