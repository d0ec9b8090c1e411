import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService, ValidationCode } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ComponentMatchingStrategy } from "../../gen/ts/licensd/licensing/v1/policy_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { connectClient, grpcClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase, query } from "../support/database.js";
import { failure } from "../support/errors.js";
import { until } from "../support/wait.js";

let db: { url: string; drop(): Promise<void> };
let a: TestApp;
let b: TestApp;

beforeAll(async () => {
  db = await createTestDatabase();
  a = await startTestApp({ databaseUrl: db.url });
  b = await startTestApp({
    databaseUrl: db.url,
    env: { LICENSD_SUPER_ADMIN_KEY: a.superAdminKey, LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64") },
  });
});
afterAll(async () => {
  await a?.close();
  await b?.close();
  await db?.drop();
});

type Component = { name: string; fingerprint: string };

/** A tenant with a product, a floating policy (`policy` overrides its fields) and one license on it. */
async function setup(code: string, policy: Record<string, unknown> = {}) {
  const tenants = connectClient(TenantService, a.url, a.superAdminKey);
  const { tenant } = await tenants.createTenant({ name: `${code} vendor` });
  const { secret } = await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  const api = connectClient(LicensingService, a.url, secret);
  const product = (await api.createProduct({ code, name: "App" })).product!;
  const customer = (await api.createCustomer({ name: "Jane", email: `jane@${code.toLowerCase()}.example` })).customer!;
  /** Another policy of the product and a license on it. */
  async function license(fields: Record<string, unknown>, name: string) {
    const pol = (await api.createPolicy({ productId: product.id, name, floating: true, ...fields })).policy!;
    const lic = await api.createLicense({ policyId: pol.id, customerId: customer.id });
    return { key: lic.key, licenseId: lic.license!.id, policy: pol };
  }
  return {
    tenantId: tenant!.id,
    secret,
    api,
    admin: connectClient(ActivationService, a.url, secret),
    license,
    ...(await license(policy, "team")),
  };
}

const FOUR: Component[] = [
  { name: "board", fingerprint: "board-1" },
  { name: "cpu", fingerprint: "cpu-1" },
  { name: "disk", fingerprint: "disk-1" },
  { name: "mac", fingerprint: "mac-1" },
];

/** FOUR with all but the first `n` fingerprints changed. */
const matching = (n: number): Component[] =>
  FOUR.map((c, i) => (i < n ? c : { name: c.name, fingerprint: `${c.fingerprint}-clone` }));

const activate = (t: TestApp, key: string, fingerprint: string, components?: Component[], extra = {}) =>
  connectClient(ActivationService, t.url).activate({ key, fingerprint, components, ...extra });

const validate = (t: TestApp, key: string, fingerprint?: string, components?: Component[], extra = {}) =>
  grpcClient(LicensingService, t.url).validateLicense({ key, fingerprint, components, ...extra });

const componentRows = async (machineId: string) =>
  (await query(db.url, "select count(*)::int as n from machine_components where machine_id = $1", [machineId]))[0]
    .n as number;

describe("machine components", () => {
  it("are registered by the Activate that creates the machine, shown on the machine and audited", async () => {
    const s = await setup("MCA");
    const { machine } = await activate(a, s.key, "fp-1", [FOUR[3]!, FOUR[0]!, FOUR[2]!, FOUR[1]!]);
    expect(machine!.components).toEqual(FOUR.map((c) => expect.objectContaining(c))); // name order
    expect((await s.admin.getMachine({ id: machine!.id })).machine!.components).toEqual(
      FOUR.map((c) => expect.objectContaining(c)),
    );
    const listed = await connectClient(ActivationService, b.url, s.secret).listMachines({ licenseId: s.licenseId });
    expect(listed.machines.map((m) => m.components.map((c) => c.name))).toEqual([["board", "cpu", "disk", "mac"]]);

    // Activating it again (any instance, other components) returns it with the components it registered.
    const again = await activate(b, s.key, "fp-1", [{ name: "board", fingerprint: "other" }]);
    expect(again.machine!.id).toBe(machine!.id);
    expect(again.machine!.components.map((c) => c.fingerprint)).toEqual(FOUR.map((c) => c.fingerprint));
    expect(await componentRows(machine!.id)).toBe(4);

    // Without components, Activate takes its fast path as before and registers none.
    const plain = await activate(a, s.key, "fp-2");
    expect(plain.machine!.components).toEqual([]);
    expect((await s.admin.getMachine({ id: plain.machine!.id })).machine!.components).toEqual([]);

    const audit = await connectClient(AuditService, a.url, s.secret).listAuditEvents({ typePrefix: "machine." });
    const activated = audit.events.filter((e) => e.type === "machine.activated");
    expect(activated.map((e) => e.subject)).toEqual([machine!.id, plain.machine!.id]);
    expect(activated[0]!.payload).toMatchObject({ license_id: s.licenseId, fingerprint: "fp-1", components: FOUR });
    expect(activated[1]!.payload).not.toHaveProperty("components");

    // Deleting the machine deletes its components.
    await s.admin.deleteMachine({ id: machine!.id });
    expect(await componentRows(machine!.id)).toBe(0);
  });

  it("registers them once when 10 activations of the same new machine race on two instances", async () => {
    const s = await setup("MCR");
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => activate(i % 2 ? a : b, s.key, "fp-race", matching(4 - (i % 3)))),
    );
    const ids = new Set(results.map((r) => r.machine!.id));
    expect(ids.size).toBe(1);
    const [id] = [...ids];
    expect(await componentRows(id!)).toBe(4);
    const registered = (await s.admin.getMachine({ id })).machine!.components;
    for (const r of results) expect(r.machine!.components).toEqual(registered);
  });

  it("leave old policies as they were: none needed, and ignored for a machine that registered none", async () => {
    const s = await setup("MCO");
    expect(s.policy.componentMatchingStrategy).toBe(ComponentMatchingStrategy.MATCH_ANY);
    expect(s.policy.requireComponentsScope).toBe(false);
    await activate(a, s.key, "fp-1");
    expect((await validate(a, s.key)).code).toBe(ValidationCode.VALID);
    expect((await validate(a, s.key, "fp-1")).code).toBe(ValidationCode.VALID);
    expect((await validate(a, s.key, "fp-1", FOUR)).code).toBe(ValidationCode.VALID);
    // A machine that registered components still validates without any given.
    await activate(a, s.key, "fp-2", FOUR);
    expect((await validate(a, s.key, "fp-2")).code).toBe(ValidationCode.VALID);
    // Components given are checked (MATCH_ANY): one match is enough, none is a mismatch.
    expect((await validate(a, s.key, "fp-2", matching(1))).code).toBe(ValidationCode.VALID);
    expect(await validate(a, s.key, "fp-2", matching(0))).toMatchObject({
      valid: false,
      code: ValidationCode.COMPONENTS_SCOPE_MISMATCH,
      detail: "too few of the machine's components match: the policy needs 1 of its 4",
    });
  });

  it("match by each strategy's threshold: 4 registered, 1 to 4 given matching", async () => {
    const s = await setup("MCT");
    const expected: [ComponentMatchingStrategy, number][] = [
      [ComponentMatchingStrategy.MATCH_ANY, 1],
      [ComponentMatchingStrategy.MATCH_TWO, 2],
      [ComponentMatchingStrategy.MATCH_MOST, 3],
      [ComponentMatchingStrategy.MATCH_ALL, 4],
    ];
    for (const [strategy, needed] of expected) {
      const l = await s.license({ componentMatchingStrategy: strategy }, `s${strategy}`);
      expect(l.policy.componentMatchingStrategy).toBe(strategy);
      await activate(a, l.key, "fp", FOUR);
      for (let n = 0; n <= 4; n++) {
        const r = await validate(n % 2 ? a : b, l.key, "fp", matching(n));
        expect([ComponentMatchingStrategy[strategy], n, ValidationCode[r.code]]).toEqual([
          ComponentMatchingStrategy[strategy],
          n,
          n >= needed ? "VALID" : "COMPONENTS_SCOPE_MISMATCH",
        ]);
      }
      // Only the components given count: a subset that matches enough is enough.
      expect((await validate(a, l.key, "fp", FOUR.slice(0, needed))).code).toBe(ValidationCode.VALID);
      // A component matches by name and fingerprint both.
      const swapped = FOUR.map((c, i) => ({ name: c.name, fingerprint: FOUR[(i + 1) % 4]!.fingerprint }));
      expect((await validate(a, l.key, "fp", swapped)).code).toBe(ValidationCode.COMPONENTS_SCOPE_MISMATCH);
    }
    // MATCH_TWO needs two matches: a machine that registered one never has them.
    const two = await s.license({ componentMatchingStrategy: ComponentMatchingStrategy.MATCH_TWO }, "two");
    await activate(a, two.key, "fp", [FOUR[0]!]);
    expect((await validate(a, two.key, "fp", [FOUR[0]!])).code).toBe(ValidationCode.COMPONENTS_SCOPE_MISMATCH);
    // MATCH_MOST of 5 is 3.
    const most = await s.license({ componentMatchingStrategy: ComponentMatchingStrategy.MATCH_MOST }, "most");
    await activate(a, most.key, "fp", [...FOUR, { name: "tpm", fingerprint: "tpm-1" }]);
    expect((await validate(a, most.key, "fp", matching(2))).code).toBe(ValidationCode.COMPONENTS_SCOPE_MISMATCH);
    expect((await validate(a, most.key, "fp", matching(3))).code).toBe(ValidationCode.VALID);
  });

  it("are required under require_components_scope, checked after the user codes and before entitlements", async () => {
    const s = await setup("MCQ", { requireComponentsScope: true });
    expect(s.policy.requireComponentsScope).toBe(true);
    await activate(a, s.key, "fp-plain");
    await activate(a, s.key, "fp", FOUR);
    expect(await validate(a, s.key, "fp")).toMatchObject({
      valid: false,
      code: ValidationCode.COMPONENTS_SCOPE_REQUIRED,
      detail: "the license's policy requires the machine's components",
    });
    expect((await validate(a, s.key)).code).toBe(ValidationCode.COMPONENTS_SCOPE_REQUIRED); // no fingerprint either
    expect((await validate(a, s.key, "fp", matching(1))).code).toBe(ValidationCode.VALID);
    // Under the setting, a machine that registered none has no components to match.
    expect((await validate(a, s.key, "fp-plain", FOUR)).code).toBe(ValidationCode.COMPONENTS_SCOPE_MISMATCH);
    // Order: fingerprint codes first, user codes next, entitlements after.
    expect((await validate(a, s.key, "fp-unknown", FOUR)).code).toBe(ValidationCode.NO_MACHINE);
    expect((await validate(a, s.key, "fp", matching(0), { entitlements: ["nope"] })).code).toBe(
      ValidationCode.COMPONENTS_SCOPE_MISMATCH,
    );
    expect((await validate(a, s.key, "fp", FOUR, { entitlements: ["nope"] })).code).toBe(
      ValidationCode.ENTITLEMENTS_MISSING,
    );
    const u = await s.license({ requireComponentsScope: true, requireUserScope: true }, "users");
    expect((await validate(a, u.key)).code).toBe(ValidationCode.USER_SCOPE_REQUIRED);
    const f = await s.license({ requireComponentsScope: true, requireFingerprintScope: true }, "fp");
    expect((await validate(a, f.key)).code).toBe(ValidationCode.FINGERPRINT_SCOPE_REQUIRED);

    // Both settings change through UpdatePolicy, and instance B's answers follow.
    expect((await validate(b, s.key, "fp", matching(2))).code).toBe(ValidationCode.VALID); // cached on B
    const updated = await s.api.updatePolicy({
      id: s.policy.id,
      componentMatchingStrategy: ComponentMatchingStrategy.MATCH_ALL,
      requireComponentsScope: false,
      updateMask: { paths: ["component_matching_strategy", "require_components_scope"] },
    });
    expect(updated.policy).toMatchObject({
      componentMatchingStrategy: ComponentMatchingStrategy.MATCH_ALL,
      requireComponentsScope: false,
    });
    const after = await until(
      "MATCH_ALL seen on instance B",
      () => validate(b, s.key, "fp", matching(2)),
      (r) => r.code !== ValidationCode.VALID,
    );
    expect(after.detail).toBe("too few of the machine's components match: the policy needs 4 of its 4");
    expect((await validate(b, s.key, "fp")).code).toBe(ValidationCode.VALID); // no longer required
    expect((await validate(b, s.key, "fp-plain", FOUR)).code).toBe(ValidationCode.VALID); // none registered
  });

  it("give each question its own cached, signed answer on both instances", async () => {
    const s = await setup("MCC", { componentMatchingStrategy: ComponentMatchingStrategy.MATCH_MOST });
    await activate(a, s.key, "fp", FOUR);
    for (const t of [a, b, a, b]) {
      const good = await validate(t, s.key, "fp", matching(3), { nonce: "n1" });
      const bad = await validate(t, s.key, "fp", matching(2), { nonce: "n1" });
      const none = await validate(t, s.key, "fp", undefined, { nonce: "n1" });
      // The same components in another order are the same question.
      const reordered = await validate(t, s.key, "fp", [...matching(3)].reverse(), { nonce: "n1" });
      expect([good.code, bad.code, none.code, reordered.code]).toEqual([
        ValidationCode.VALID,
        ValidationCode.COMPONENTS_SCOPE_MISMATCH,
        ValidationCode.VALID,
        ValidationCode.VALID,
      ]);
      expect(good.signature).not.toEqual(bad.signature);
      // The signed scope lists the components asked, in name order, whatever order they were sent in.
      for (const answer of [good, reordered])
        expect(answer.scope?.components.map((c) => [c.name, c.fingerprint])).toEqual(
          matching(3).map((c) => [c.name, c.fingerprint]),
        );
    }
    // A machine deleted and activated again with other components is checked against those at once, on either instance.
    const { machines } = await s.admin.listMachines({ licenseId: s.licenseId });
    await s.admin.deleteMachine({ id: machines[0]!.id });
    await activate(b, s.key, "fp", matching(1));
    for (const t of [a, b]) {
      expect((await validate(t, s.key, "fp", FOUR)).code).toBe(ValidationCode.COMPONENTS_SCOPE_MISMATCH);
      expect((await validate(t, s.key, "fp", matching(1))).code).toBe(ValidationCode.VALID);
    }
  });

  it("are tenant-scoped: another tenant's machine with the same fingerprint lends none of its components", async () => {
    const s = await setup("MCX", { componentMatchingStrategy: ComponentMatchingStrategy.MATCH_ALL });
    const other = await setup("MCY", { componentMatchingStrategy: ComponentMatchingStrategy.MATCH_ALL });
    const mine = await activate(a, s.key, "same-fp", FOUR);
    const theirs = await activate(a, other.key, "same-fp", matching(0));
    expect((await validate(a, other.key, "same-fp", FOUR)).code).toBe(ValidationCode.COMPONENTS_SCOPE_MISMATCH);
    expect((await validate(a, s.key, "same-fp", FOUR)).code).toBe(ValidationCode.VALID);
    expect(await failure(s.admin.getMachine({ id: theirs.machine!.id }))).toMatchObject({ code: "NotFound" });
    const listed = await s.admin.listMachines({});
    expect(listed.machines.map((m) => m.id)).toEqual([mine.machine!.id]);
    expect(listed.machines[0]!.components.map((c) => c.fingerprint)).toEqual(FOUR.map((c) => c.fingerprint));
  });

  it("refuse bad input naming the field, and change nothing", async () => {
    const s = await setup("MCB");
    const many = Array.from({ length: 33 }, (_, i) => ({ name: `c${i}`, fingerprint: "f" }));
    const cases: [Component[], string, string?][] = [
      [[FOUR[0]!, { name: "board", fingerprint: "again" }], "components[1].name", "INVALID_COMPONENTS"],
      [[{ name: "", fingerprint: "f" }], "components[0].name"],
      [[{ name: "Board", fingerprint: "f" }], "components[0].name"],
      [[{ name: "b".repeat(64), fingerprint: "f" }], "components[0].name"],
      [[{ name: "-board", fingerprint: "f" }], "components[0].name"],
      [[FOUR[0]!, { name: "disk", fingerprint: "" }], "components[1].fingerprint"],
      [[{ name: "disk", fingerprint: "f".repeat(256) }], "components[0].fingerprint"],
      [[{ name: "disk", fingerprint: "nul\u0000" }], "components[0].fingerprint"],
      [many, "components"],
    ];
    for (const [components, field, reason] of cases) {
      for (const call of [() => activate(a, s.key, "fp", components), () => validate(a, s.key, "fp", components)]) {
        expect(await failure(call()), field).toMatchObject({
          code: "InvalidArgument",
          metadata: { field },
          ...(reason ? { reason } : {}),
        });
      }
    }
    expect(await failure(validate(a, s.key, undefined, FOUR))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_COMPONENTS",
      metadata: { field: "components" },
    });
    // Bad UTF-8 in a component (binary protobuf: a field 8 Component whose fingerprint is 0xff 0xfe).
    const key = Buffer.from(s.key);
    const component = Buffer.concat([Buffer.from([0x0a, 4]), Buffer.from("disk"), Buffer.from([0x12, 2, 0xff, 0xfe])]);
    const body = Buffer.concat([
      Buffer.from([0x0a, key.length]),
      key,
      Buffer.from([0x12, 2]),
      Buffer.from("fp"),
      Buffer.from([0x42, component.length]),
      component,
    ]);
    const res = await fetch(`${a.url}/licensd.activation.v1.ActivationService/Activate`, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body,
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { code: string }).code).toBe("invalid_argument");
    expect((await s.admin.listMachines({ licenseId: s.licenseId })).machines).toEqual([]);
    const rows = await query(
      db.url,
      "select count(*)::int as n from machine_components c join machines m on m.id = c.machine_id where m.license_id = $1",
      [s.licenseId],
    );
    expect(rows[0].n).toBe(0);
    // Policy settings: an undefined strategy is refused.
    expect(
      await failure(
        s.api.createPolicy({
          productId: s.policy.productId,
          name: "bad",
          componentMatchingStrategy: 9 as ComponentMatchingStrategy,
        }),
      ),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "component_matching_strategy" } });
  });
});
