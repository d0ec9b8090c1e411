import { describe, expect, it } from "vitest";
import { compose, type ComposableLicense } from "../../src/licensing/composition.js";
import type { FeatureDefinition } from "../../src/licensing/entitlements.js";

const features: FeatureDefinition[] = [
  { name: "seats", kind: "limit", compose: "sum", description: "" },
  { name: "projects", kind: "limit", compose: "max", description: "" },
  { name: "sso", kind: "flag", compose: "union", description: "" },
  { name: "model", kind: "tier", compose: "max", description: "" },
  { name: "region", kind: "limit", compose: "union", description: "" },
];
const lic = (id: string, over: Partial<ComposableLicense>): ComposableLicense => ({ licenseId: id, productId: `prod_${id}`, features, allFeatures: false, entitlements: [], agents: [], ...over });

describe("cross-product composition", () => {
  const result = compose([
    lic("a", {
      entitlements: [{ feature: "seats", limit: 5 }, { feature: "projects", limit: 3 }, { feature: "sso", enabled: false }, { feature: "model", tier: "standard" }, { feature: "region", limit: 1 }],
      agents: [{ agent: "coder", tokenLimit: 1000, modelTier: "basic" }],
    }),
    lic("b", {
      entitlements: [{ feature: "seats", limit: 10 }, { feature: "projects", limit: 7 }, { feature: "sso", enabled: true }, { feature: "model", tier: "premium" }, { feature: "region", limit: 2 }],
      agents: [{ agent: "coder", tokenLimit: 500, modelTier: "enterprise" }, { agent: "reviewer", tokenLimit: 10, modelTier: null }],
    }),
    lic("c", { entitlements: [{ feature: "model", tier: "basic" }] }),
  ]);
  const get = (f: string) => result.entitlements.find((e) => e.feature === f)!;

  it("sum adds numbers", () => expect(get("seats").value).toBe(15));
  it("max takes the highest number", () => expect(get("projects").value).toBe(7));
  it("max takes the highest tier (basic < standard < premium < enterprise)", () => expect(get("model").value).toBe("premium"));
  it("union ORs booleans", () => expect(get("sso").value).toBe(true));
  it("union keeps the first non-flag value", () => expect(get("region").value).toBe(1));
  it("lists every source", () => {
    expect(get("model").sources.map((s) => [s.licenseId, s.value])).toEqual([["a", "standard"], ["b", "premium"], ["c", "basic"]]);
    expect(get("seats").sources.map((s) => s.productId)).toEqual(["prod_a", "prod_b"]);
  });
  it("adds agent token limits and keeps the highest model tier", () => {
    expect(result.agents).toEqual([
      { agent: "coder", tokenLimit: 1500, modelTier: "enterprise", licenseIds: ["a", "b"] },
      { agent: "reviewer", tokenLimit: 10, modelTier: null, licenseIds: ["b"] },
    ]);
  });
  it("an agent token limit of 0 (no limit) stays unlimited when composed", () => {
    const r = compose([lic("x", { agents: [{ agent: "coder", tokenLimit: 0, modelTier: null }] }), lic("y", { agents: [{ agent: "coder", tokenLimit: 300, modelTier: null }] })]);
    expect(r.agents.map((a) => [a.agent, a.tokenLimit])).toEqual([["coder", 0]]);
  });
  it("all_features enables every flag of the product", () => {
    const r = compose([lic("x", { allFeatures: true })]);
    expect(r.entitlements).toEqual([{ feature: "sso", compose: "union", value: true, sources: [{ productId: "prod_x", licenseId: "x", value: true }] }]);
  });
  it("composes nothing to nothing", () => expect(compose([])).toEqual({ entitlements: [], agents: [] }));
});
