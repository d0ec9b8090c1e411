import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";

/**
 * The range every google.protobuf.Timestamp in a request must lie in (docs/requests.md):
 * from the Unix epoch up to, not including, the year 9000. Real use fits (a license that
 * never expires leaves its expiry unset); what licensd derives from a request time (plus a
 * duration of at most 100 years, plus a grace period) stays representable in PostgreSQL,
 * JavaScript and every client's Timestamp (which ends at 9999-12-31).
 */
export const EARLIEST_REQUEST_TIME = { seconds: 0n, text: "1970-01-01T00:00:00Z" } as const;
export const LATEST_REQUEST_TIME = {
  seconds: 221845392000n,
  text: "9000-01-01T00:00:00Z",
  date: new Date(221845392000 * 1000),
} as const;

/** google.protobuf.Duration's own range (±10,000 years), which licensd's arithmetic holds. */
const MAX_DURATION_SECONDS = 315576000000n;
const MAX_NANOS = 999_999_999;

export interface FieldProblem {
  /** The field's path, as protovalidate writes it (`metadata["k"]`, `events[2].metric`). */
  field: string;
  message: string;
  rule: string;
}

/** 64-bit integers in requests: licensd computes with JavaScript numbers, exact up to 2^53−1. */
const MAX_INT64 = BigInt(Number.MAX_SAFE_INTEGER);

export const TIME_RANGE_MESSAGE =
  `must be from ${EARLIEST_REQUEST_TIME.text} up to (not including) ${LATEST_REQUEST_TIME.text}, ` +
  `with nanos from 0 to ${MAX_NANOS}`;
const DURATION_MESSAGE =
  `must be within ±${MAX_DURATION_SECONDS}s, with nanos from -${MAX_NANOS} to ${MAX_NANOS} ` +
  "of the same sign as seconds";
const NUL_MESSAGE = "must not contain the NUL character (U+0000)";
const INT64_MESSAGE = `must be from -${MAX_INT64} to ${MAX_INT64} (2^53−1)`;

type Fields = Record<string, unknown>;
/** True when the message (or anything in it) breaks a rule; cheap, allocates nothing. */
type Check = (m: Fields) => boolean;

const TIMESTAMP = "google.protobuf.Timestamp";
const DURATION = "google.protobuf.Duration";

const NONE: readonly FieldProblem[] = Object.freeze([]);

/**
 * What protovalidate rules cannot say about every field of every request: no string
 * holds NUL (PostgreSQL refuses it in text), every Timestamp is in the supported range,
 * every Duration is a valid one and every 64-bit integer is exact as a JavaScript number.
 * A compiled plan per message type makes the common
 * case (nothing wrong) a few property reads and `indexOf` calls; only a request that
 * breaks a rule is walked again to name every offending field.
 */
export class RequestFieldRules {
  private readonly plans = new Map<string, Check[]>();
  private readonly relevance = new Map<string, boolean>();

  /**
   * `checkedByService`: message types a service checks item by item and answers as data
   * (usage events: a bad event is a Rejection, the rest of its batch lands), left out here.
   */
  constructor(private readonly checkedByService: ReadonlySet<string> = new Set()) {}

  /** Every offending field of `message` (at most `limit`), or an empty list. */
  check(schema: DescMessage, message: object, limit = 20): readonly FieldProblem[] {
    if (!this.scan(schema, message as Fields)) return NONE;
    const out: FieldProblem[] = [];
    collect(schema, message as Fields, "", out, limit, this.checkedByService);
    return out;
  }

  private scan(schema: DescMessage, m: Fields): boolean {
    const plan = this.plan(schema);
    for (let i = 0; i < plan.length; i++) if (plan[i](m)) return true;
    return false;
  }

  private plan(schema: DescMessage): Check[] {
    let plan = this.plans.get(schema.typeName);
    if (plan) return plan;
    plan = [];
    // Registered before its fields are compiled, so recursive types (Struct, Value) end.
    this.plans.set(schema.typeName, plan);
    if (schema.typeName === TIMESTAMP) plan.push((m) => badTimestamp(m));
    else if (schema.typeName === DURATION) plan.push((m) => badDuration(m));
    else
      for (const field of schema.fields) {
        const check = this.fieldCheck(field);
        if (check) plan.push(check);
      }
    return plan;
  }

  private fieldCheck(field: DescField): Check | undefined {
    const oneof = field.oneof;
    const value: (m: Fields) => unknown = oneof
      ? (m) => {
          const o = m[oneof.localName] as { case?: string; value?: unknown } | undefined;
          return o?.case === field.localName ? o.value : undefined;
        }
      : (m) => m[field.localName];
    switch (field.fieldKind) {
      case "scalar":
        if (field.scalar === ScalarType.STRING) return (m) => hasNul(value(m));
        return LONG.has(field.scalar) ? (m) => badLong(value(m)) : undefined;
      case "enum":
        return undefined;
      case "message": {
        if (!this.relevant(field.message)) return undefined;
        const sub = field.message;
        return (m) => {
          const v = value(m);
          if (v === undefined || v === null) return false;
          // Wrapper types (StringValue, …) are held unboxed.
          if (typeof v !== "object") return hasNul(v);
          return this.scan(sub, v as Fields);
        };
      }
      case "list": {
        if (field.listKind === "scalar") {
          const bad = field.scalar === ScalarType.STRING ? hasNul : LONG.has(field.scalar) ? badLong : undefined;
          if (!bad) return undefined;
          return (m) => {
            const list = value(m) as unknown[];
            for (let i = 0; i < list.length; i++) if (bad(list[i])) return true;
            return false;
          };
        }
        if (field.listKind !== "message" || !this.relevant(field.message)) return undefined;
        const sub = field.message;
        return (m) => {
          const list = value(m) as Fields[];
          for (let i = 0; i < list.length; i++) if (this.scan(sub, list[i])) return true;
          return false;
        };
      }
      case "map": {
        const keys = field.mapKey === ScalarType.STRING;
        const values = field.mapKind === "scalar" && (field.scalar === ScalarType.STRING || LONG.has(field.scalar));
        const sub = field.mapKind === "message" && this.relevant(field.message) ? field.message : undefined;
        if (!keys && !values && !sub) return undefined;
        return (m) => {
          const map = value(m) as Record<string, unknown>;
          for (const k in map) {
            if (keys && k.indexOf("\0") !== -1) return true;
            const v = map[k];
            if (values && (hasNul(v) || badLong(v))) return true;
            if (sub && this.scan(sub, v as Fields)) return true;
          }
          return false;
        };
      }
    }
  }

  /** Whether a message type holds (directly or below) anything these rules look at. */
  private relevant(schema: DescMessage): boolean {
    const known = this.relevance.get(schema.typeName);
    if (known !== undefined) return known;
    if (this.checkedByService.has(schema.typeName)) {
      this.relevance.set(schema.typeName, false);
      return false;
    }
    this.relevance.set(schema.typeName, false);
    const found =
      schema.typeName === TIMESTAMP ||
      schema.typeName === DURATION ||
      schema.fields.some((f) => {
        if (f.fieldKind === "scalar" || (f.fieldKind === "list" && f.listKind === "scalar"))
          return f.scalar === ScalarType.STRING || LONG.has(f.scalar);
        if (f.fieldKind === "map")
          return (
            f.mapKey === ScalarType.STRING ||
            (f.mapKind === "scalar" && (f.scalar === ScalarType.STRING || LONG.has(f.scalar))) ||
            (f.mapKind === "message" && this.relevant(f.message))
          );
        if (f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message"))
          return this.relevant(f.message);
        return false;
      });
    this.relevance.set(schema.typeName, found);
    return found;
  }
}

const hasNul = (v: unknown) => typeof v === "string" && v.indexOf("\0") !== -1;

const LONG = new Set([ScalarType.INT64, ScalarType.UINT64, ScalarType.SINT64, ScalarType.FIXED64, ScalarType.SFIXED64]);
/** 64-bit fields hold a bigint (licensd's protos use no `jstype = JS_STRING`). */
const badLong = (v: unknown) => typeof v === "bigint" && (v > MAX_INT64 || v < -MAX_INT64);

function badTimestamp(m: Fields): boolean {
  const seconds = m.seconds as bigint;
  const nanos = m.nanos as number;
  return (
    seconds < EARLIEST_REQUEST_TIME.seconds || seconds >= LATEST_REQUEST_TIME.seconds || nanos < 0 || nanos > MAX_NANOS
  );
}

function badDuration(m: Fields): boolean {
  const seconds = m.seconds as bigint;
  const nanos = m.nanos as number;
  if (seconds > MAX_DURATION_SECONDS || seconds < -MAX_DURATION_SECONDS || nanos > MAX_NANOS || nanos < -MAX_NANOS)
    return true;
  return (seconds > 0n && nanos < 0) || (seconds < 0n && nanos > 0);
}

/** The slow path: names every offending field, in protovalidate's path syntax. */
function collect(
  schema: DescMessage,
  m: Fields,
  path: string,
  out: FieldProblem[],
  limit: number,
  skip: ReadonlySet<string>,
): void {
  if (skip.has(schema.typeName)) return;
  if (schema.typeName === TIMESTAMP) {
    if (badTimestamp(m)) out.push({ field: path, message: TIME_RANGE_MESSAGE, rule: "licensd.timestamp.range" });
    return;
  }
  if (schema.typeName === DURATION) {
    if (badDuration(m)) out.push({ field: path, message: DURATION_MESSAGE, rule: "licensd.duration.range" });
    return;
  }
  const nul = (field: string, v: unknown) => {
    if (hasNul(v)) out.push({ field, message: NUL_MESSAGE, rule: "licensd.string.no_nul" });
    else if (badLong(v)) out.push({ field, message: INT64_MESSAGE, rule: "licensd.int64.range" });
  };
  for (const field of schema.fields) {
    if (out.length >= limit) return;
    const at = path === "" ? field.name : `${path}.${field.name}`;
    let v: unknown;
    if (field.oneof) {
      const o = m[field.oneof.localName] as { case?: string; value?: unknown } | undefined;
      if (o?.case !== field.localName) continue;
      v = o.value;
    } else v = m[field.localName];
    switch (field.fieldKind) {
      case "scalar":
        nul(at, v);
        break;
      case "message":
        if (typeof v === "string") nul(at, v);
        else if (v !== undefined && v !== null && typeof v === "object")
          collect(field.message, v as Fields, at, out, limit, skip);
        break;
      case "list":
        (v as unknown[]).forEach((item, i) => {
          if (field.listKind === "message") collect(field.message, item as Fields, `${at}[${i}]`, out, limit, skip);
          else nul(`${at}[${i}]`, item);
        });
        break;
      case "map":
        for (const [k, item] of Object.entries(v as Record<string, unknown>)) {
          const keyPath = field.mapKey === ScalarType.STRING ? `${at}[${quoteKey(k)}]` : `${at}[${k}]`;
          if (field.mapKey === ScalarType.STRING && k.includes("\0"))
            out.push({ field: keyPath, message: `key ${NUL_MESSAGE}`, rule: "licensd.string.no_nul" });
          if (field.mapKind === "message") collect(field.message, item as Fields, keyPath, out, limit, skip);
          else nul(keyPath, item);
        }
        break;
      case "enum":
        break;
    }
  }
}

/** A map key as protovalidate quotes it, with control characters escaped so the path stays printable. */
function quoteKey(key: string): string {
  return JSON.stringify(key);
}
