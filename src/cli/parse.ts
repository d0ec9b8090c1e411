/*
 * Flag values → request fields. Each parser throws commander's InvalidArgumentError, so the
 * message names the flag (`option '--duration <d>' argument '3x' is invalid. …`) and the exit
 * code is the usage one; nothing reaches the server that the command line already knows is wrong.
 */
import { readFileSync } from "node:fs";
import type { DescEnum } from "@bufbuild/protobuf";
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { InvalidArgumentError } from "commander";

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800, y: 31_536_000 };

/** `90s`, `15m`, `12h`, `30d`, `2w`, `1y` or plain seconds. */
export function parseSeconds(value: string): bigint {
  const m = /^(\d{1,12})([smhdwy]?)$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError("a duration like 90s, 15m, 12h, 30d, 2w or 1y");
  return BigInt(m[1]) * BigInt(UNITS[m[2] || "s"]);
}

export const parseDuration = (value: string): Duration => ({ seconds: parseSeconds(value), nanos: 0 }) as Duration;

/** An ISO 8601 time (`2027-01-31`, `2027-01-31T12:00:00Z`), `now`, or relative to now: `+30d`, `-7d`. */
export function parseTime(value: string): Timestamp {
  let ms: number;
  const expected = "an ISO 8601 time (2027-01-31), now, +30d or -7d";
  if (value === "now") ms = Date.now();
  else if (/^[+-]/.test(value)) {
    let seconds: bigint;
    try {
      seconds = parseSeconds(value.slice(1));
    } catch {
      throw new InvalidArgumentError(expected);
    }
    ms = Date.now() + (value[0] === "+" ? 1 : -1) * Number(seconds) * 1000;
  } else {
    if (!/^\d{4}-\d{2}-\d{2}/.test(value)) throw new InvalidArgumentError(expected);
    ms = new Date(value).getTime();
    if (Number.isNaN(ms)) throw new InvalidArgumentError(expected);
  }
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 } as Timestamp;
}

/** A yes/no flag value (a setting that can be turned off again, unlike a bare switch). */
export function parseYesNo(value: string): boolean {
  if (["yes", "true", "on", "1"].includes(value)) return true;
  if (["no", "false", "off", "0"].includes(value)) return false;
  throw new InvalidArgumentError("expected yes or no");
}

export function parseCount(value: string): number {
  if (!/^\d{1,9}$/.test(value)) throw new InvalidArgumentError("a whole number, 0 or more");
  return Number(value);
}

export function parsePositiveBig(value: string): bigint {
  if (!/^\d{1,15}$/.test(value) || /^0+$/.test(value)) throw new InvalidArgumentError("a positive whole number");
  return BigInt(value);
}

/** The short names of an enum's values: LICENSE_STATUS_SUSPENDED → suspended. */
export function enumNames(desc: DescEnum): string[] {
  return desc.values.filter((v) => v.number !== 0).map((v) => shortEnumName(desc, v.name));
}

export function shortEnumName(desc: DescEnum, name: string): string {
  const prefix = desc.sharedPrefix ? `${desc.sharedPrefix.toUpperCase()}` : "";
  const short = prefix && name.startsWith(prefix) ? name.slice(prefix.length) : name;
  return short.toLowerCase().replaceAll("_", "-");
}

/** A parser for an enum flag: accepts the short name in any case, with - or _. */
export function enumParser(desc: DescEnum): (value: string) => number {
  return (value: string) => {
    const wanted = value.trim().toLowerCase().replaceAll("_", "-");
    const found = desc.values.find((v) => v.number !== 0 && shortEnumName(desc, v.name) === wanted);
    if (!found) throw new InvalidArgumentError(`one of ${enumNames(desc).join(", ")}`);
    return found.number;
  };
}

/** Collects repeated `--meta key=value` into a map. */
export function collectPairs(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const i = value.indexOf("=");
  if (i < 1) throw new InvalidArgumentError("key=value");
  return { ...previous, [value.slice(0, i)]: value.slice(i + 1) };
}

/** Collects repeated `--component name=fingerprint` into a list, in the order given (the server checks them). */
export function collectComponents(
  value: string,
  previous: { name: string; fingerprint: string }[] = [],
): { name: string; fingerprint: string }[] {
  const i = value.indexOf("=");
  if (i < 1) throw new InvalidArgumentError("name=fingerprint, e.g. disk=5f2c…");
  return [...previous, { name: value.slice(0, i), fingerprint: value.slice(i + 1) }];
}

export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** `--body '{"…"}'` or `--body @file.json`: request fields in protobuf JSON that have no flag of their own. */
export function parseBody(value: string): Record<string, unknown> {
  let text = value;
  if (value.startsWith("@")) {
    try {
      text = readFileSync(value.slice(1), "utf8");
    } catch (err) {
      throw new InvalidArgumentError(`cannot read ${value.slice(1)}: ${(err as Error).message}`);
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(`not JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    throw new InvalidArgumentError("a JSON object of request fields");
  return parsed as Record<string, unknown>;
}
