import fc from "fast-check";

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** What a hand-written JSON client gets wrong: wrong types, numbers past int64, bad RFC 3339, unknown enum names. */
const WRONG: Json[] = [
  0,
  -1,
  1.5,
  1e308,
  -1e308,
  "1e400",
  "NaN",
  "Infinity",
  "-Infinity",
  true,
  null,
  [],
  {},
  [1, "a"],
  { a: { b: 1 } },
  "",
  "\u0000",
  "\ud800",
  "x\udfffy",
  "9223372036854775808",
  "-9223372036854775809",
  "18446744073709551616",
  "0x10",
  "0001-01-01T00:00:00Z",
  "9999-12-31T23:59:59.999999999Z",
  "10000-01-01T00:00:00Z",
  "2024-02-30T00:00:00Z",
  "2024-01-01T00:00:00+25:00",
  "2024-01-01",
  "1e30s",
  "-3153600001s",
  "315576000001s",
  "0.5s",
  "s",
  "1.0000000001s",
  "NOT_A_VALUE",
];

/** One change to a JSON request: where (a walk of choices) and what. */
export interface JsonMutation {
  walk: number[];
  kind: "replace" | "unknown_field";
  value: Json;
}

export const jsonMutationArb: fc.Arbitrary<JsonMutation> = fc.record({
  walk: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }),
  kind: fc.constantFrom<JsonMutation["kind"]>("replace", "replace", "unknown_field"),
  value: fc.oneof(fc.constantFrom(...WRONG), fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>),
});

/**
 * Applies mutations to a copy of `json`, following each walk into objects and arrays;
 * at the top, `names` (the message's JSON field names) may be chosen even when absent.
 */
export function mutateJson(json: Json, mutations: JsonMutation[], names: string[] = []): Json {
  const root = structuredClone(json);
  for (const m of mutations) {
    let node: Json = root;
    for (let i = 0; i < m.walk.length; i++) {
      if (node === null || typeof node !== "object") break;
      const keys: (string | number)[] = Array.isArray(node)
        ? node.map((_, j) => j)
        : [...new Set([...Object.keys(node), ...(i === 0 ? names : [])])];
      if (keys.length === 0) break;
      const key = keys[m.walk[i] % keys.length];
      const last = i === m.walk.length - 1;
      const child: Json | undefined = (node as Record<string | number, Json>)[key];
      if (last || child === undefined || child === null || typeof child !== "object") {
        if (m.kind === "replace") (node as Record<string | number, Json>)[key] = m.value;
        else if (!Array.isArray(node)) (node as Record<string, Json>)[`zzUnknown${m.walk[0]}`] = m.value;
        break;
      }
      node = child;
    }
    if (
      m.kind === "unknown_field" &&
      root !== null &&
      typeof root === "object" &&
      !Array.isArray(root) &&
      m.walk.length === 1
    )
      root.zzUnknownTop = m.value;
  }
  return root;
}
