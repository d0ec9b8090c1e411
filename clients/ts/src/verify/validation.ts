/*
 * Signed ValidateLicense answers (docs/formats.md, "Signed ValidateLicense answers"):
 * Ed25519 over the RFC 8785 canonical JSON of the answer's proto3 JSON form, without `kid`
 * and `signature`. The nonce the caller sent must come back (a replayed answer fails),
 * and the answer's `time` must be recent.
 */
import { fromJson, isMessage, toJson, type JsonObject } from "@bufbuild/protobuf";
import canonicalize from "canonicalize";
import {
  type ValidateLicenseResponse,
  ValidateLicenseResponseSchema,
} from "../../gen/licensd/licensing/v1/licensing_service_pb.js";
import { fromBase64, utf8 } from "./bytes.js";
import { verifyEd25519 } from "./ed25519.js";
import { lookupKey, type Keys } from "./keys.js";

export type ValidationResponseCode =
  /** Signed by a published key, with the nonce sent and a recent time. */
  | "VERIFIED"
  /** Not a ValidateLicense answer (not JSON, not an object, no signature). */
  | "MALFORMED"
  | "UNKNOWN_KEY"
  | "KEYS_UNAVAILABLE"
  | "BAD_SIGNATURE"
  /** The nonce differs from the one sent: a replayed answer. */
  | "NONCE_MISMATCH"
  /** The signed scope (fingerprint, user, product, entitlements) is not the `scope` option: not this request's. */
  | "SCOPE_MISMATCH"
  /** The answer's time is further from now than `maxAgeMs`, or unreadable. */
  | "TIME_OUT_OF_RANGE";

export interface ValidationResponseResult {
  /** The answer is licensd's, for this request, and recent. Says nothing of the license: see `valid`. */
  verified: boolean;
  code: ValidationResponseCode;
  /** The license is valid: the answer is verified and says `valid: true`. */
  valid: boolean;
  /** The answer, once it parsed (also when a check failed: show it, don't trust it). */
  response?: ValidateLicenseResponse;
}

export interface VerifyValidationResponseOptions {
  /** The published Ed25519 keys, pinned or through SigningKeys. */
  keys: Keys;
  /**
   * The nonce sent with ValidateLicense; the answer must echo it. Pass null only to verify
   * an answer kept from earlier (then nothing stops a replay of it).
   */
  nonce: string | null;
  /**
   * What the request scoped the validation to (as sent): each member given must equal the answer's signed `scope`
   * (servers from this version on echo it), so an answer judged for another machine or user fails with SCOPE_MISMATCH.
   * Members left out are not checked. Pass the request itself to check all of them.
   */
  scope?: ValidationScopeExpectation;
  /** How far the answer's time may be from now, either way; default 5 minutes. Infinity turns the check off. */
  maxAgeMs?: number;
  /** Defaults to the current time. */
  now?: Date;
}

/** The scope a ValidateLicense request asked for (its fields of the same names). */
export interface ValidationScopeExpectation {
  productCode?: string;
  fingerprint?: string;
  entitlements?: readonly string[];
  user?: string;
  /** Compared in any order (the answer lists them by name). */
  components?: readonly { name: string; fingerprint: string }[];
}

/** Whether the answer's signed scope is the one expected (members not given are not checked). */
function scopeMatches(response: ValidateLicenseResponse, expected: ValidationScopeExpectation): boolean {
  const got = response.scope;
  const same = (want: string | undefined, have: string | undefined) => want === undefined || want === (have ?? "");
  const wanted = expected.entitlements;
  const had = got?.entitlements ?? [];
  return (
    same(expected.productCode, got?.productCode) &&
    same(expected.fingerprint, got?.fingerprint) &&
    same(expected.user, got?.user) &&
    (wanted === undefined || (wanted.length === had.length && wanted.every((e, i) => e === had[i]))) &&
    (expected.components === undefined || componentsText(expected.components) === componentsText(got?.components ?? []))
  );
}

/** Components as one comparable text, in name order. */
const componentsText = (components: readonly { name: string; fingerprint: string }[]) =>
  JSON.stringify(
    [...components]
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((c) => [c.name, c.fingerprint]),
  );

const outcome = (code: ValidationResponseCode, response?: ValidateLicenseResponse): ValidationResponseResult => ({
  verified: code === "VERIFIED",
  code,
  valid: code === "VERIFIED" && response?.valid === true,
  response,
});

/** The proto3 JSON object of an answer given as message, parsed JSON or JSON text. */
function jsonOf(answer: unknown): JsonObject | undefined {
  try {
    if (isMessage(answer, ValidateLicenseResponseSchema))
      return toJson(ValidateLicenseResponseSchema, answer) as JsonObject;
    const json = typeof answer === "string" ? (JSON.parse(answer) as unknown) : answer;
    return typeof json === "object" && json !== null && !Array.isArray(json) ? (json as JsonObject) : undefined;
  } catch {
    return undefined;
  }
}

/** The bytes licensd signed: the answer's proto3 JSON without kid and signature, canonicalized. */
export function validationSigningBytes(json: JsonObject): Uint8Array {
  const { kid: _kid, signature: _signature, ...signed } = json;
  return utf8(canonicalize(signed) ?? "");
}

/**
 * Verifies a ValidateLicense answer: the message a generated client returns (up-to-date
 * generated code: older code drops newer fields and fails), or the Connect JSON body,
 * parsed or as text (verifies whatever fields it holds). The promise never rejects.
 */
export async function verifyValidationResponse(
  answer: ValidateLicenseResponse | JsonObject | string,
  opts: VerifyValidationResponseOptions,
): Promise<ValidationResponseResult> {
  const json = jsonOf(answer);
  if (!json || typeof json.signature !== "string") return outcome("MALFORMED");
  let response: ValidateLicenseResponse;
  try {
    response = isMessage(answer, ValidateLicenseResponseSchema)
      ? answer
      : fromJson(ValidateLicenseResponseSchema, json, { ignoreUnknownFields: true });
  } catch {
    return outcome("MALFORMED");
  }
  const signature = fromBase64(json.signature);
  if (!signature) return outcome("BAD_SIGNATURE", response);
  const found = await lookupKey(opts?.keys, json.kid);
  if (!found.ok) return outcome(found.code, response);
  let signed: Uint8Array;
  try {
    signed = validationSigningBytes(json);
  } catch {
    return outcome("MALFORMED", response);
  }
  if (!(await verifyEd25519(found.key.publicKey, signed, signature))) return outcome("BAD_SIGNATURE", response);
  if (opts.nonce !== null && (typeof opts.nonce !== "string" || response.nonce !== opts.nonce))
    return outcome("NONCE_MISMATCH", response);
  if (opts.scope && !scopeMatches(response, opts.scope)) return outcome("SCOPE_MISMATCH", response);
  const maxAgeMs = opts.maxAgeMs ?? 5 * 60_000;
  if (maxAgeMs !== Number.POSITIVE_INFINITY) {
    const time = typeof json.time === "string" ? Date.parse(json.time) : Number.NaN;
    const now = opts.now instanceof Date ? opts.now.getTime() : Date.now();
    if (!(Math.abs(now - time) <= maxAgeMs)) return outcome("TIME_OUT_OF_RANGE", response);
  }
  return outcome("VERIFIED", response);
}
