import { ScalarType, type DescField, type DescMessage, type DescMethod } from "@bufbuild/protobuf";
import fc from "fast-check";
import { licenseKeyDigest } from "../../../src/activation/offline-request.js";
import { offlineRequestWith, type Pools } from "./world.js";

/** A request message as plain init data (what `create(schema, init)` takes). */
export type Init = Record<string, unknown>;

/**
 * How hostile a generated message is: `plausible` fills fields with real ids and sane
 * values (to reach deep code paths), `mixed` makes a few fields hostile, `hostile` most.
 */
type Mode = "plausible" | "sparse" | "mixed" | "hostile";
const HOSTILE_ODDS: Record<Mode, number> = { plausible: 0, sparse: 0, mixed: 0.15, hostile: 0.6 };

interface Ctx {
  pools: Pools;
  own: Pools;
  method: DescMethod;
  /** Ids destructive calls must not name (the fuzz tenants). */
  spare: { tenant: string };
  mode: Mode;
}

const NOW = Math.floor(Date.now() / 1000);
const DAY = 86_400;

/** What requests may name: every real value, the caller's own tenant's, and a tenant DeleteTenant may take. */
export interface Names {
  pools: Pools;
  own: Pools;
  spare: { tenant: string };
}

/** Requests for `method`'s input, from its descriptor: every field by type, values real, random and at the edges. */
export function requestArb(method: DescMethod, names: Names): fc.Arbitrary<Init> {
  // `sparse`: plausible values in half the fields, for RPCs that take one of several (license_id or customer_id).
  const weights: Record<Mode, number> = { plausible: 3, sparse: 1, mixed: 2, hostile: 1 };
  return fc.oneof(
    ...(Object.keys(weights) as Mode[]).map((mode) => ({
      weight: weights[mode],
      arbitrary: messageArb(method.input, { ...names, method, mode }, 0),
    })),
  );
}

/** Requests that look right: real ids of the caller's tenant, sane values (a seed to corrupt). */
export function plausibleArb(method: DescMethod, names: Names): fc.Arbitrary<Init> {
  return messageArb(method.input, { ...names, method, mode: "plausible" }, 0);
}

/** A client stream's messages: a plausible first message more often than not, then anything. */
export function streamArb(method: DescMethod, names: Names): fc.Arbitrary<Init[]> {
  const first = messageArb(method.input, { ...names, method, mode: "plausible" }, 0);
  return fc
    .tuple(fc.oneof(first, requestArb(method, names)), fc.array(requestArb(method, names), { maxLength: 3 }))
    .map(([a, rest]) => [a, ...rest]);
}

function messageArb(desc: DescMessage, ctx: Ctx, depth: number): fc.Arbitrary<Init> {
  if (desc.typeName === "google.protobuf.Timestamp") return timestampArb(ctx);
  if (desc.typeName === "google.protobuf.Duration") return durationArb(ctx);
  if (desc.typeName === "google.protobuf.FieldMask") return fieldMaskArb(ctx);
  if (depth > 4) return fc.constant({});
  const entries: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of desc.fields) {
    if (field.oneof) continue;
    // Plausible requests carry most fields, fewer lists and maps.
    const collection = field.fieldKind === "list" || field.fieldKind === "map";
    const presence = ctx.mode === "plausible" ? (collection ? 2 : 5) : 2;
    entries[field.localName] = fc.option(fieldArb(field, desc, ctx, depth), { nil: undefined, freq: presence });
  }
  for (const oneof of desc.oneofs) {
    entries[oneof.localName] = fc.oneof(
      fc.constant(undefined),
      ...oneof.fields.map((f) => fieldArb(f, desc, ctx, depth).map((value) => ({ case: f.localName, value }))),
    );
  }
  return fc.record(entries).map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)));
}

function fieldArb(field: DescField, parent: DescMessage, ctx: Ctx, depth: number): fc.Arbitrary<unknown> {
  switch (field.fieldKind) {
    case "scalar":
      return scalarArb(field.scalar, field, parent, ctx);
    case "enum":
      return enumArb(
        field.enum.values.map((v) => v.number),
        ctx,
      );
    case "message":
      if (field.message.typeName === "google.protobuf.Timestamp") return timestampArb(ctx, field.name);
      return messageArb(field.message, ctx, depth + 1);
    case "list": {
      const item: fc.Arbitrary<unknown> =
        field.listKind === "scalar"
          ? scalarArb(field.scalar, field, parent, ctx)
          : field.listKind === "enum"
            ? enumArb(
                field.enum.values.map((v) => v.number),
                ctx,
              )
            : messageArb(field.message, ctx, depth + 1);
      return sized(
        fc.array(item, { maxLength: HOSTILE_ODDS[ctx.mode] === 0 ? 2 : 3 }),
        item.map((x) => [x]),
        ctx,
        (x, n) => Array.from({ length: n }, () => x[0]),
      );
    }
    case "map": {
      const key =
        field.mapKey === ScalarType.STRING ? mapKeyArb(ctx) : scalarArb(field.mapKey, field, parent, ctx).map(String);
      const value: fc.Arbitrary<unknown> =
        field.mapKind === "scalar"
          ? scalarArb(field.scalar, field, parent, ctx)
          : field.mapKind === "enum"
            ? enumArb(
                field.enum.values.map((v) => v.number),
                ctx,
              )
            : messageArb(field.message, ctx, depth + 1);
      const small = fc.dictionary(key, value, { maxKeys: 3 });
      return sized(
        small,
        value.map((v) => ({ k0: v })),
        ctx,
        (x, n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, x.k0])),
      );
    }
  }
}

/**
 * A small collection usually; in hostile moods one past every limit licensd has (200,
 * 1000, …), of copies of one item, fewer when the item is big: a request stays under
 * 8 MB (twice what the server reads), not the gigabytes 5,000 copies of a 100,000-character
 * string would make.
 */
function sized<T, S>(
  small: fc.Arbitrary<T>,
  seed: fc.Arbitrary<S>,
  ctx: Ctx,
  grow: (s: S, n: number) => T,
): fc.Arbitrary<T> {
  if (HOSTILE_ODDS[ctx.mode] === 0) return small;
  const big = fc
    .tuple(seed, fc.constantFrom(17, 33, 65, 101, 201, 257, 1001, 5000))
    .map(([s, n]) => grow(s, Math.max(1, Math.min(n, Math.floor(8_000_000 / approxSize(s))))));
  return fc.oneof({ weight: 6, arbitrary: small }, { weight: 1, arbitrary: big });
}

/** Roughly how many bytes a value takes on the wire. */
function approxSize(v: unknown): number {
  if (typeof v === "string") return v.length + 2;
  if (v instanceof Uint8Array) return v.length + 2;
  if (Array.isArray(v)) return v.reduce((n: number, x) => n + approxSize(x), 2);
  if (v !== null && typeof v === "object")
    return Object.entries(v).reduce((n, [k, x]) => n + k.length + approxSize(x), 2);
  return 10;
}

const hostileOr = <T>(ctx: Ctx, plausible: fc.Arbitrary<T>, hostile: fc.Arbitrary<T>): fc.Arbitrary<T> => {
  const odds = HOSTILE_ODDS[ctx.mode];
  if (odds === 0) return plausible;
  const h = Math.round(odds * 20);
  return fc.oneof({ weight: 20 - h, arbitrary: plausible }, { weight: h, arbitrary: hostile });
};

const INT32 = [0, 1, -1, 2, 50, 1000, 1001, 1_000_000, 1_000_001, 2_147_483_647, -2_147_483_648];
const INT64 = [0n, 1n, -1n, 2n ** 31n, 2n ** 53n + 1n, 2n ** 62n, 2n ** 63n - 1n, -(2n ** 63n), -(2n ** 53n)];
const UINT64 = [0n, 1n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n];

function scalarArb(scalar: ScalarType, field: DescField, parent: DescMessage, ctx: Ctx): fc.Arbitrary<unknown> {
  switch (scalar) {
    case ScalarType.STRING:
      return hostileOr(ctx, plausibleString(field, parent, ctx), hostileString());
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return hostileOr(ctx, plausibleInt(field), fc.oneof(fc.constantFrom(...INT32), fc.integer()));
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return hostileOr(ctx, plausibleInt(field), fc.oneof(fc.constantFrom(0, 1, 4_294_967_295), fc.nat()));
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return hostileOr(
        ctx,
        plausibleInt(field).map(BigInt),
        fc.oneof(fc.constantFrom(...INT64), fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n)),
      );
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return hostileOr(
        ctx,
        plausibleInt(field).map(BigInt),
        fc.oneof(fc.constantFrom(...UINT64), fc.bigInt(0n, 2n ** 64n - 1n)),
      );
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return fc.oneof(fc.constantFrom(Number.NaN, Infinity, -Infinity, -0, 0, 1e308, 5e-324, 1.5, 3.4e38), fc.double());
    case ScalarType.BYTES:
      return fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.constant(new Uint8Array(70_000)));
  }
}

function plausibleInt(field: DescField): fc.Arbitrary<number> {
  if (field.name === "page_size") return fc.constantFrom(0, 1, 2, 50, 1000);
  if (/seq|size/.test(field.name)) return fc.integer({ min: 0, max: 40 });
  if (/quantity|limit/.test(field.name)) return fc.integer({ min: 0, max: 10_000 });
  return fc.integer({ min: 0, max: 10 });
}

function enumArb(values: number[], ctx: Ctx): fc.Arbitrary<number> {
  // The zero value is UNSPECIFIED: a default some fields refuse, so less often than the rest.
  const set = values.filter((v) => v !== 0);
  const defined =
    set.length === 0
      ? fc.constant(0)
      : fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...set) }, { weight: 1, arbitrary: fc.constant(0) });
  return hostileOr(
    ctx,
    defined,
    fc.oneof(fc.constantFrom(-1, values.length, 2_147_483_647, -2_147_483_648), fc.integer()),
  );
}

/** Strings that break things: NUL, lone surrogates, control characters, huge, SQL and JSON look-alikes. */
export function hostileString(): fc.Arbitrary<string> {
  return fc.oneof(
    fc.constantFrom(
      "",
      " ",
      "\0",
      "a\0b",
      "\uD800",
      "x\uDFFFy",
      "\u0001\u001f\u007f",
      "\r\n",
      "'; drop table licenses; --",
      "%_\\",
      "💥",
      "\u202Eevil",
      '{"a":1}',
      "null",
      "NaN",
      "-1",
      "1e400",
    ),
    fc.string({ maxLength: 40 }),
    fc.string({ unit: "binary", maxLength: 40 }),
    fc.tuple(fc.string({ maxLength: 10 }), fc.string({ maxLength: 10 })).map(([a, b]) => `${a}\0${b}`),
    fc.constantFrom(64, 129, 256, 513, 2001, 20_000, 100_000).map((n) => "x".repeat(n)),
  );
}

function mapKeyArb(ctx: Ctx): fc.Arbitrary<string> {
  return hostileOr(
    ctx,
    fc.oneof(fc.constantFrom("user", "region"), fc.stringMatching(/^[a-z][a-z0-9._/-]{0,10}$/)),
    hostileString(),
  );
}

const pick = (xs: string[], extra: string[] = []): fc.Arbitrary<string> =>
  fc.constantFrom(...(xs.length + extra.length > 0 ? [...xs, ...extra] : [""]));
const fakeId = (prefix: string) => fc.stringMatching(/^[0-9a-z]{26}$/).map((s) => `${prefix}_${s}`);
/** Mostly the caller's own, sometimes another tenant's, now and then one that never existed. */
const real = (ctx: Ctx, k: keyof Pools) =>
  fc.oneof({ weight: 6, arbitrary: pick(ctx.own[k]) }, { weight: 1, arbitrary: pick(ctx.pools[k]) });
const realOrFake = (ctx: Ctx, k: keyof Pools, prefix: string) =>
  fc.oneof({ weight: 7, arbitrary: real(ctx, k) }, { weight: 1, arbitrary: fakeId(prefix) });

/** Values that look right for the field (by its name and message): real ids, keys, leases, sane text. */
function plausibleString(field: DescField, parent: DescMessage, ctx: Ctx): fc.Arbitrary<string> {
  const p = ctx.pools;
  const name = field.name;
  const msg = parent.name;
  if (name === "tenant_id")
    return fc.oneof(
      { weight: 5, arbitrary: pick(ctx.own.tenant) },
      { weight: 2, arbitrary: fc.constant("") },
      { weight: 1, arbitrary: pick(p.tenant) },
      { weight: 1, arbitrary: fakeId("ten") },
    );
  if (name === "id") return idFor(msg, ctx);
  const email = () =>
    fc.oneof(
      real(ctx, "email"),
      fc.stringMatching(/^[a-z0-9]{1,12}$/).map((u) => `${u}@example.com`),
    );
  const byField: Record<string, () => fc.Arbitrary<string>> = {
    product_id: () => realOrFake(ctx, "product", "prod"),
    policy_id: () => realOrFake(ctx, "policy", "pol"),
    customer_id: () => realOrFake(ctx, "customer", "cus"),
    license_id: () => realOrFake(ctx, "license", "lic"),
    machine_id: () => realOrFake(ctx, "machine", "mach"),
    key: () => licenseKeyArb(ctx),
    license_key: () => licenseKeyArb(ctx),
    custom_key: () =>
      fc.oneof(
        { weight: 4, arbitrary: fc.constant("") },
        { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9._-]{16,40}$/) },
        { weight: 1, arbitrary: pick(p.licenseKey) },
      ),
    fingerprint: () =>
      fc.oneof(
        { weight: 3, arbitrary: real(ctx, "fingerprint") },
        { weight: 1, arbitrary: fc.stringMatching(/^[a-z0-9-]{1,20}$/) },
      ),
    lease: () =>
      fc.oneof(
        { weight: 4, arbitrary: real(ctx, "lease") },
        { weight: 1, arbitrary: fc.constant("licensd1.e30.AAAA") },
      ),
    metric: () =>
      fc.oneof(
        { weight: 4, arbitrary: real(ctx, "metric") },
        { weight: 1, arbitrary: fc.stringMatching(/^[a-z][a-z0-9_.-]{0,10}$/) },
      ),
    unique_attribute: () => fc.constantFrom("", "user", "region"),
    product_code: () =>
      fc.oneof(
        { weight: 3, arbitrary: real(ctx, "productCode") },
        { weight: 1, arbitrary: fc.stringMatching(/^[A-Z0-9]{3}$/) },
      ),
    code: () => fc.stringMatching(/^[A-Z0-9]{3}$/),
    feature: () =>
      fc.oneof(
        { weight: 4, arbitrary: real(ctx, "feature") },
        { weight: 1, arbitrary: fc.stringMatching(/^[a-z][a-z0-9_]{0,8}$/) },
      ),
    agent: () =>
      fc.oneof(
        { weight: 3, arbitrary: real(ctx, "agent") },
        { weight: 1, arbitrary: fc.stringMatching(/^[a-z]{1,8}$/) },
      ),
    agent_id: () =>
      fc.oneof(
        { weight: 3, arbitrary: real(ctx, "agent") },
        { weight: 1, arbitrary: fc.stringMatching(/^[a-z]{1,8}$/) },
      ),
    email,
    customer_email: email,
    request: () =>
      fc.oneof({ weight: 2, arbitrary: real(ctx, "offlineRequest") }, { weight: 1, arbitrary: offlineRequestArb(p) }),
    page_token: () => pageTokenArb(p),
    idempotency_key: () => fc.oneof(fc.constant(""), fc.stringMatching(/^[A-Za-z0-9._:-]{1,24}$/)),
    batch_id: () => fc.stringMatching(/^[A-Za-z0-9._:-]{1,16}$/),
    type_prefix: () => fc.constantFrom("", "license.", "tenant.", "machine.activated", "usage."),
    subject: () => fc.oneof(real(ctx, "license"), real(ctx, "product"), fc.constant("")),
    actor: () => fc.constantFrom("", "super_admin", "anonymous", "key:key_x"),
    tier: () => fc.constantFrom("pro", "", "enterprise"),
    name: () =>
      msg.endsWith("PolicyRequest")
        ? fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,10}$/)
        : fc.stringMatching(/^[A-Za-z0-9 ]{1,20}$/),
  };
  const make = byField[name];
  if (make) return make();
  return fc.stringMatching(/^[A-Za-z0-9 ._-]{0,20}$/);
}

function idFor(messageName: string, ctx: Ctx): fc.Arbitrary<string> {
  if (/DeleteTenant/.test(messageName))
    return fc.oneof({ weight: 3, arbitrary: fc.constant(ctx.spare.tenant) }, { weight: 1, arbitrary: fakeId("ten") });
  const kinds: [RegExp, keyof Pools, string][] = [
    [/ApiKey/, "apiKey", "key"],
    [/Tenant/, "tenant", "ten"],
    [/AuditEvent/, "event", "evt"],
    [/Anomal/, "anomaly", "anm"],
    [/Machine/, "machine", "mach"],
    [/Meter/, "meter", "mtr"],
    [/Customer/, "customer", "cus"],
    [/Policy/, "policy", "pol"],
    [/Product/, "product", "prod"],
    [/License/, "license", "lic"],
  ];
  for (const [re, k, prefix] of kinds)
    if (re.test(messageName)) return ctx.pools[k].length > 0 ? realOrFake(ctx, k, prefix) : fakeId(prefix);
  return fakeId("x");
}

function licenseKeyArb(ctx: Ctx): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 6, arbitrary: real(ctx, "licenseKey") },
    { weight: 1, arbitrary: fc.stringMatching(/^[A-Z0-9]{3}(-[A-Z0-9]{5}){7}$/) },
    { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9._-]{16,40}$/) },
    { weight: 1, arbitrary: pick(ctx.pools.licenseKey).map((k) => k.toLowerCase()) },
  );
}

/** Page tokens a client could write by hand (the examples among them). */
export const FORGED_PAGE_TOKENS = [
  { a: "x\u0000", f: "{}" },
  { a: "1e300|0|k", f: "{}" },
  { a: 5 },
  [],
  null,
  { a: "lic_zzzzzzzzzzzzzzzzzzzzzzzzzz", f: "{}" },
  "x",
].map((v) => Buffer.from(JSON.stringify(v)).toString("base64url"));

/** Page tokens: none, real, and forged (JSON a client could write: NUL, huge numbers, wrong types). */
function pageTokenArb(p: Pools): fc.Arbitrary<string> {
  const forged = fc.constantFrom(...FORGED_PAGE_TOKENS);
  return fc.oneof(
    { weight: 6, arbitrary: fc.constant("") },
    { weight: 2, arbitrary: pick(p.pageToken) },
    { weight: 1, arbitrary: forged },
  );
}

/**
 * Offline activation requests MACed with a real license key, so the server must read the
 * payload: a well-formed one with one field (or every field, now and then) replaced by
 * anything JSON can hold.
 */
function offlineRequestArb(p: Pools): fc.Arbitrary<string> {
  const anything = fc.oneof(
    hostileString(),
    fc.integer(),
    fc.double(),
    fc.constant(null),
    fc.constant([]),
    fc.constant({}),
    fc.boolean(),
    fc.constantFrom(-1, 2 ** 31, 2 ** 53, 1e300),
  );
  const times = fc.constantFrom(
    "0001-01-01T00:00:00Z",
    "+275760-09-13T00:00:00Z",
    "9999-12-31T23:59:59.999Z",
    "1969-12-31T23:59:59Z",
    "nope",
    "",
  );
  return fc
    .tuple(
      pick(p.licenseKey),
      fc.stringMatching(/^[a-z0-9-]{1,20}$/),
      fc.constantFrom(
        "v",
        "typ",
        "key_digest",
        "fingerprint",
        "hostname",
        "platform",
        "cores",
        "created_at",
        "nonce",
        "*",
      ),
      fc.oneof(anything, times),
    )
    .map(([key, fingerprint, field, value]) => {
      const payload: Record<string, unknown> = {
        v: 1,
        typ: "activation_request",
        key_digest: licenseKeyDigest(key).toString("base64url"),
        fingerprint,
        hostname: "host",
        platform: "linux",
        cores: 4,
        created_at: new Date().toISOString(),
        nonce: "n",
      };
      if (field === "*") for (const k of Object.keys(payload)) payload[k] = value;
      else payload[field] = value;
      return offlineRequestWith(key, payload);
    });
}

function timestampArb(ctx: Ctx, name = ""): fc.Arbitrary<Init> {
  const [from, to] = /expire/.test(name)
    ? [DAY / 24, 400 * DAY]
    : /start|day|issued|after/.test(name)
      ? [-30 * DAY, 0]
      : /end|before/.test(name)
        ? [-DAY, 30 * DAY]
        : name === "time"
          ? [-3600, 0]
          : [-60 * DAY, 400 * DAY];
  const plausible = fc.integer({ min: from, max: to }).map((d) => ({ seconds: BigInt(NOW + d), nanos: 0 }));
  const hostile = fc.oneof(
    fc.constantFrom(
      { seconds: 0n, nanos: 0 },
      { seconds: -1n, nanos: 0 },
      { seconds: -62135596800n, nanos: 0 },
      { seconds: 253402300799n, nanos: 999_999_999 },
      { seconds: 253402300799n, nanos: 0 },
      { seconds: 221845391999n, nanos: 999_999_999 },
      { seconds: 221845392000n, nanos: 0 },
      { seconds: 8_640_000_000_000n, nanos: 0 },
      { seconds: 10n ** 15n, nanos: 0 },
      { seconds: -(10n ** 15n), nanos: 0 },
      { seconds: BigInt(NOW), nanos: -1 },
      { seconds: BigInt(NOW), nanos: 1_000_000_000 },
      { seconds: BigInt(NOW), nanos: 999_999_999 },
      { seconds: 2n ** 63n - 1n, nanos: 0 },
    ),
    fc.record({ seconds: fc.bigInt(-62135596800n, 253402300799n), nanos: fc.integer({ min: 0, max: 999_999_999 }) }),
  );
  return hostileOr(ctx, plausible, hostile);
}

function durationArb(ctx: Ctx): fc.Arbitrary<Init> {
  const plausible = fc
    .constantFrom(60n, 3600n, 86_400n, 30n * 86_400n, 365n * 86_400n)
    .map((seconds) => ({ seconds, nanos: 0 }));
  const hostile = fc.oneof(
    fc.constantFrom(
      { seconds: 0n, nanos: 0 },
      { seconds: 59n, nanos: 999_999_999 },
      { seconds: 60n, nanos: -1 },
      { seconds: 31_536_000n, nanos: 1 },
      { seconds: 3_153_600_000n, nanos: 0 },
      { seconds: 3_153_600_001n, nanos: 0 },
      { seconds: 315_576_000_000n, nanos: 0 },
      { seconds: 315_576_000_001n, nanos: 0 },
      { seconds: -1n, nanos: 0 },
      { seconds: 61n, nanos: -2_000_000_000 },
      { seconds: 2n ** 63n - 1n, nanos: 0 },
    ),
    fc.record({
      seconds: fc.bigInt(-(2n ** 40n), 2n ** 40n),
      nanos: fc.integer({ min: -999_999_999, max: 999_999_999 }),
    }),
  );
  return hostileOr(ctx, plausible, hostile);
}

function fieldMaskArb(ctx: Ctx): fc.Arbitrary<Init> {
  const own = ctx.method.input.fields.flatMap((f) =>
    f.fieldKind === "message" && f.message.typeName.startsWith("licensd.")
      ? f.message.fields.map((g) => g.name)
      : [f.name],
  );
  // What an update may name: not ids, keys or the times the server keeps.
  const names = own.filter((n) => !/^(update_mask|id|tenant_id|idempotency_key)$|_time$/.test(n));
  const plausible = fc.subarray(names.length > 0 ? names : ["name"], { minLength: 1 });
  const hostile = fc.array(
    fc.oneof(hostileString(), fc.constantFrom("*", "id", "tenant_id", "create_time", "a.b.c", "")),
    { maxLength: 4 },
  );
  return hostileOr(ctx, plausible, hostile).map((paths) => ({ paths }));
}
