import { describe, expect, it } from "vitest";
import { compose, type ComposableLicense } from "../../src/licensing/composition.js";
import {
  effectiveAgents,
  effectiveEntitlements,
  type AgentEntitlement,
  type FeatureDefinition,
} from "../../src/licensing/entitlements.js";

const features: FeatureDefinition[] = [
  { name: "seats", kind: "limit", compose: "sum", description: "" },
  { name: "projects", kind: "limit", compose: "max", description: "" },
  { name: "sso", kind: "flag", compose: "union", description: "" },
  { name: "model", kind: "tier", compose: "max", description: "" },
  { name: "region", kind: "limit", compose: "union", description: "" },
];
const lic = (id: string, over: Partial<ComposableLicense>): ComposableLicense => ({
  licenseId: id,
  productId: `prod_${id}`,
  features,
  allFeatures: false,
  entitlements: [],
  agents: [],
  ...over,
});

describe("cross-product composition", () => {
  const result = compose([
    lic("a", {
      entitlements: [
        { feature: "seats", limit: 5 },
        { feature: "projects", limit: 3 },
        { feature: "sso", enabled: false },
        { feature: "model", tier: "standard" },
        { feature: "region", limit: 1 },
      ],
      agents: effectiveAgents([{ agent: "coder", tokenLimit: 1000, modelTier: "basic" }], []),
    }),
    lic("b", {
      entitlements: [
        { feature: "seats", limit: 10 },
        { feature: "projects", limit: 7 },
        { feature: "sso", enabled: true },
        { feature: "model", tier: "premium" },
        { feature: "region", limit: 2 },
      ],
      agents: effectiveAgents(
        [
          { agent: "coder", tokenLimit: 500, modelTier: "enterprise" },
          { agent: "reviewer", tokenLimit: 10 },
        ],
        [],
      ),
    }),
    lic("c", { entitlements: [{ feature: "model", tier: "basic" }] }),
  ]);
  const get = (f: string) => result.entitlements.find((e) => e.feature === f)!;

  it("sum adds numbers", () => expect(get("seats").value).toBe(15));
  it("max takes the highest number", () => expect(get("projects").value).toBe(7));
  it("max takes the highest tier (basic < standard < premium < enterprise)", () =>
    expect(get("model").value).toBe("premium"));
  it("union ORs booleans", () => expect(get("sso").value).toBe(true));
  it("union keeps the first non-flag value", () => expect(get("region").value).toBe(1));
  it("lists every source", () => {
    expect(get("model").sources.map((s) => [s.licenseId, s.value])).toEqual([
      ["a", "standard"],
      ["b", "premium"],
      ["c", "basic"],
    ]);
    expect(get("seats").sources.map((s) => s.productId)).toEqual(["prod_a", "prod_b"]);
  });
  it("adds agent token limits and keeps the highest model tier", () => {
    expect(result.agents).toEqual([
      { agent: "coder", enabled: true, tokenLimit: 1500, modelTier: "enterprise", licenseIds: ["a", "b"] },
      { agent: "reviewer", enabled: true, tokenLimit: 10, modelTier: null, licenseIds: ["b"] },
    ]);
  });
  it("an agent token limit of 0 (no limit) stays unlimited when composed", () => {
    const r = compose([
      lic("x", { agents: effectiveAgents([{ agent: "coder", tokenLimit: 0 }], []) }),
      lic("y", {
        agents: effectiveAgents(
          [{ agent: "coder" }, { agent: "reviewer", tokenLimit: 5 }],
          [{ agent: "coder", tokenLimit: 300 }],
        ),
      }),
    ]);
    expect(r.agents.map((a) => [a.agent, a.tokenLimit])).toEqual([
      ["coder", 0],
      ["reviewer", 5],
    ]);
  });
  it("a license that disables an agent adds nothing to its limit or tier; enabled when any license enables it", () => {
    const policy: AgentEntitlement[] = [{ agent: "coder", tokenLimit: 100, modelTier: "premium" }];
    const r = compose([
      lic("x", {
        agents: effectiveAgents(policy, [
          { agent: "coder", enabled: false },
          { agent: "tester", enabled: false, tokenLimit: 7 },
        ]),
      }),
      lic("y", { agents: effectiveAgents(policy, [{ agent: "coder", modelTier: "basic" }]) }),
      lic("z", { agents: effectiveAgents([{ agent: "coder", enabled: false, tokenLimit: 0 }], []) }),
    ]);
    expect(r.agents).toEqual([
      { agent: "coder", enabled: true, tokenLimit: 100, modelTier: "basic", licenseIds: ["x", "y", "z"] },
      { agent: "tester", enabled: false, tokenLimit: 0, modelTier: null, licenseIds: ["x"] },
    ]);
  });
  it("all_features enables every flag of the product", () => {
    const r = compose([lic("x", { allFeatures: true })]);
    expect(r.entitlements).toEqual([
      {
        feature: "sso",
        compose: "union",
        value: true,
        sources: [{ productId: "prod_x", licenseId: "x", value: true }],
      },
    ]);
  });
  it("composes nothing to nothing", () => expect(compose([])).toEqual({ entitlements: [], agents: [] }));
});

describe("a license's agent overrides over its policy's (Vinzy's per-attribute merge)", () => {
  const policy: AgentEntitlement[] = [
    { agent: "coder", tokenLimit: 50_000, modelTier: "premium" },
    { agent: "reviewer", enabled: true, tokenLimit: 1_000 },
  ];

  it("inherits every attribute the override leaves unset", () => {
    expect(
      effectiveAgents(policy, [
        { agent: "coder", tokenLimit: 100_000 },
        { agent: "reviewer", modelTier: "basic" },
      ]),
    ).toEqual([
      { agent: "coder", enabled: true, tokenLimit: 100_000, modelTier: "premium" },
      { agent: "reviewer", enabled: true, tokenLimit: 1_000, modelTier: "basic" },
    ]);
  });
  it("disables an agent and keeps the rest of its allowance", () => {
    expect(effectiveAgents(policy, [{ agent: "coder", enabled: false }])[0]).toEqual({
      agent: "coder",
      enabled: false,
      tokenLimit: 50_000,
      modelTier: "premium",
    });
  });
  it("sets no limit with an explicit 0, which an unset limit would not", () => {
    expect(effectiveAgents(policy, [{ agent: "coder", tokenLimit: 0 }])[0].tokenLimit).toBe(0);
    expect(effectiveAgents(policy, [{ agent: "coder" }])[0].tokenLimit).toBe(50_000);
  });
  it("gives an agent only the override names the defaults for what it leaves unset", () => {
    expect(
      effectiveAgents(policy, [{ agent: "tester", modelTier: "standard" }]).find((a) => a.agent === "tester"),
    ).toEqual({ agent: "tester", enabled: true, tokenLimit: 0, modelTier: "standard" });
  });
  it("keeps what overrides stored before attributes could be unset meant: every attribute replaced, a null tier included", () => {
    expect(effectiveAgents(policy, [{ agent: "coder", tokenLimit: 0, modelTier: null }])[0]).toEqual({
      agent: "coder",
      enabled: true,
      tokenLimit: 0,
      modelTier: null,
    });
  });
  it("resolves Vinzy's own example (resolve_agent_entitlements) the same way", () => {
    // Product {"CTO": {enabled, 50000, premium}}, license {"CTO": {token_limit: 100000}, "CDO": {enabled: true}}.
    // Vinzy's unset tier reads "standard"; licensd's stays no tier (MODEL_TIER_UNSPECIFIED).
    expect(
      effectiveAgents(
        [{ agent: "CTO", enabled: true, tokenLimit: 50_000, modelTier: "premium" }],
        [
          { agent: "CTO", tokenLimit: 100_000 },
          { agent: "CDO", enabled: true },
        ],
      ),
    ).toEqual([
      { agent: "CDO", enabled: true, tokenLimit: 0, modelTier: null },
      { agent: "CTO", enabled: true, tokenLimit: 100_000, modelTier: "premium" },
    ]);
  });
});

describe("the order of entitlements and agents in answers and signed files", () => {
  it("is by code point, the same on every host (not the locale's collation)", () => {
    const names = ["a_b", "a-b", "B", "a", "é", "z", "😀", "\uffee"];
    const expected = ["B", "a", "a-b", "a_b", "z", "é", "\uffee", "😀"];
    expect(
      effectiveEntitlements(
        names.map((feature) => ({ feature, enabled: true })),
        [],
      ).map((e) => e.feature),
    ).toEqual(expected);
    expect(
      effectiveAgents(
        names.map((agent) => ({ agent })),
        [],
      ).map((a) => a.agent),
    ).toEqual(expected);
  });
});
