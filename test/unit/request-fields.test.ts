import { create } from "@bufbuild/protobuf";
import { StructSchema, ValueSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  CreateTenantRequestSchema,
  UpdateTenantRequestSchema,
} from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import {
  CreatePolicyRequestSchema,
  CreateLicenseRequestSchema,
  ValidateLicenseRequestSchema,
} from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { StreamUsageRequestSchema } from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { UsageEventSchema } from "../../gen/ts/licensd/usage/v1/usage_pb.js";
import { GetInclusionProofRequestSchema } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { RequestFieldRules } from "../../src/platform/request-fields.js";

const rules = new RequestFieldRules();
const fields = (problems: readonly { field: string }[]) => problems.map((p) => p.field);

describe("request field rules", () => {
  it("pass a clean request without a word", () => {
    const req = create(ValidateLicenseRequestSchema, {
      key: "ABC-123",
      fingerprint: "f",
      entitlements: ["a", "b"],
      nonce: "n",
    });
    expect(rules.check(ValidateLicenseRequestSchema, req)).toEqual([]);
  });

  it("name every string that holds NUL: plain, repeated, map keys and values, nested, oneof", () => {
    const req = create(StreamUsageRequestSchema, {
      batchId: "b\0",
      events: [
        { metric: "ok", attributes: { fine: "yes" } },
        { metric: "tok\0ens", agentId: "\0", attributes: { "k\0": "v", k2: "v\0" } },
      ],
    });
    const problems = rules.check(StreamUsageRequestSchema, req);
    expect(fields(problems)).toEqual([
      "batch_id",
      "events[1].metric",
      "events[1].agent_id",
      'events[1].attributes["k\\u0000"]',
      'events[1].attributes["k2"]',
    ]);
    expect(problems[0]).toEqual({
      field: "batch_id",
      message: "must not contain the NUL character (U+0000)",
      rule: "licensd.string.no_nul",
    });
    expect(problems[2].message).toMatch(/NUL/);
    const update = create(UpdateTenantRequestSchema, {
      tenant: { id: "ten_x", metadata: { a: "\0" } },
      updateMask: { paths: ["name", "meta\0data"] },
    });
    expect(fields(rules.check(UpdateTenantRequestSchema, update))).toEqual([
      'tenant.metadata["a"]',
      "update_mask.paths[1]",
    ]);
    const tenant = create(CreateTenantRequestSchema, { name: "\0" });
    expect(fields(rules.check(CreateTenantRequestSchema, tenant))).toEqual(["name"]);
  });

  it("look into google.protobuf.Struct and Value strings", () => {
    const value = create(ValueSchema, {
      kind: {
        case: "structValue",
        value: create(StructSchema, {
          fields: {
            "a\0": { kind: { case: "stringValue", value: "x" } },
            b: { kind: { case: "listValue", value: { values: [{ kind: { case: "stringValue", value: "\0" } }] } } },
          },
        }),
      },
    });
    expect(fields(rules.check(ValueSchema, value))).toEqual([
      'struct_value.fields["a\\u0000"]',
      'struct_value.fields["b"].list_value.values[0].string_value',
    ]);
  });

  it("hold timestamps to [1970-01-01, 9000-01-01) with valid nanos, and durations to their spec", () => {
    const at = (seconds: bigint, nanos = 0) =>
      rules.check(CreateLicenseRequestSchema, create(CreateLicenseRequestSchema, { expireTime: { seconds, nanos } }));
    expect(at(0n)).toEqual([]);
    expect(at(221845391999n, 999_999_999)).toEqual([]);
    expect(fields(at(221845392000n))).toEqual(["expire_time"]);
    expect(at(253402300799n, 999_999_999)[0]).toMatchObject({
      field: "expire_time",
      rule: "licensd.timestamp.range",
      message: expect.stringContaining("1970-01-01T00:00:00Z up to (not including) 9000-01-01T00:00:00Z"),
    });
    expect(fields(at(-62135596800n))).toEqual(["expire_time"]);
    expect(fields(at(1n, -1))).toEqual(["expire_time"]);
    expect(fields(at(1n, 1_000_000_000))).toEqual(["expire_time"]);
    const policy = (seconds: bigint, nanos: number) =>
      fields(
        rules.check(CreatePolicyRequestSchema, create(CreatePolicyRequestSchema, { duration: { seconds, nanos } })),
      );
    expect(policy(60n, 5)).toEqual([]);
    expect(policy(60n, -5)).toEqual(["duration"]);
    expect(policy(60n, 1_000_000_000)).toEqual(["duration"]);
    expect(policy(315576000001n, 0)).toEqual(["duration"]);
  });

  it("hold 64-bit integers to JavaScript's exact range, ±(2^53−1), nested ones included", () => {
    const proof = (seq: bigint) =>
      rules.check(GetInclusionProofRequestSchema, create(GetInclusionProofRequestSchema, { seq, treeSize: 1n }));
    expect(proof(9007199254740991n)).toEqual([]);
    expect(proof(-9007199254740991n)).toEqual([]);
    expect(proof(9007199254740992n)).toEqual([
      {
        field: "seq",
        message: "must be from -9007199254740991 to 9007199254740991 (2^53−1)",
        rule: "licensd.int64.range",
      },
    ]);
    const policy = create(CreatePolicyRequestSchema, {
      entitlements: [{ feature: "a", value: { case: "limit", value: 2n ** 63n - 1n } }],
      agentEntitlements: [{ agent: "x", tokenLimit: -(2n ** 63n) }],
    });
    expect(fields(rules.check(CreatePolicyRequestSchema, policy))).toEqual([
      "entitlements[0].limit",
      "agent_entitlements[0].token_limit",
    ]);
  });

  it("leave alone the types a service checks item by item (usage events are answered per event)", () => {
    const perEvent = new RequestFieldRules(new Set([UsageEventSchema.typeName]));
    const req = create(StreamUsageRequestSchema, {
      batchId: "b\0",
      events: [{ metric: "m\0", quantity: 2n ** 63n - 1n, time: { seconds: -1n } }],
    });
    expect(fields(perEvent.check(StreamUsageRequestSchema, req))).toEqual(["batch_id"]);
  });
});
