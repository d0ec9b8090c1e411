/*
 * ValidateLicense's answers as the wire carries and signs them, reused while the license
 * and the question stay the same. The hot path: a request then only splices its own fields
 * (nonce, time, lease) into a precut canonical text, instead of serialising and
 * canonicalising the whole response again.
 */
import { create, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import canonicalize from "canonicalize";
import * as pb from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { TenantCache, type TenantChanges } from "../platform/tenant-cache.js";
import { agentToProto, entitlementToProto, statusToProto } from "./licensing.mapper.js";
import type { LicenseSnapshot, Validation } from "./validation.service.js";
import { componentsKey } from "./components.js";
import type { Component } from "./license-machines.js";

/**
 * A ValidateLicense answer without its per-request fields (nonce, time, lease, kid,
 * signature), with the RFC 8785 canonical JSON of its fields, already in key order. The
 * text it signs is byte for byte what validationSigningBytes (license.rpc.ts) computes
 * for the whole response: the reference docs/formats.md describes, which the tests verify
 * answers with, as the Python SDK's verify_validation_response does (test/e2e/python_formats.py).
 * No TypeScript SDK verifies these answers yet.
 */
export interface Answer {
  base: pb.ValidateLicenseResponse;
  /**
   * The canonical JSON of base's fields, in key order, cut where the per-request fields
   * go: pieces[0] comes before "lease", pieces[1] between "lease" and "nonce", pieces[2]
   * between "nonce" and "time" ("scope"), pieces[3] after "time" (each a comma-joined run of
   * `"key":value`, possibly empty).
   */
  pieces: [string, string, string, string];
  snapshot: LicenseSnapshot | undefined;
  code: string;
  valid: boolean;
  detail: string;
  status: string | undefined;
}

/** What a ValidateLicense request asks, besides its nonce. */
export interface Question {
  key: string;
  productCode: string;
  fingerprint: string;
  entitlements: string[];
  /** The user asking; "" or unset for none. */
  user?: string;
  /** The machine's components; unset or empty for none. */
  components?: readonly Component[];
}

function answerOf(question: Question, v: Validation): Answer {
  const { productCode, fingerprint, entitlements, user = "", components = [] } = question;
  const scoped =
    productCode !== "" || fingerprint !== "" || entitlements.length > 0 || user !== "" || components.length > 0;
  const base = create(pb.ValidateLicenseResponseSchema, {
    valid: v.valid,
    code: pb.ValidationCode[v.code],
    detail: v.detail,
    license: v.license && {
      id: v.license.id,
      productCode: v.license.productCode,
      policyName: v.license.policyName,
      status: statusToProto(v.license.effectiveStatus),
      expireTime: v.license.expiresAt ? timestampFromDate(v.license.expiresAt) : undefined,
      customerEmail: v.license.customerEmail,
      maxMachines: v.license.maxMachines,
    },
    features: v.features,
    entitlements: v.entitlements.map(entitlementToProto),
    agentEntitlements: v.agents.map(agentToProto),
    // The question as asked (the cache key below holds all of it): signed, so a verifier can match it to its own.
    // Components in name order: the cache key takes them in any order (names are unique in a request).
    scope: scoped
      ? {
          productCode,
          fingerprint,
          entitlements: [...entitlements],
          user,
          components: [...components]
            .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
            .map((c) => ({ name: c.name, fingerprint: c.fingerprint })),
        }
      : undefined,
  });
  const json = toJson(pb.ValidateLicenseResponseSchema, base) as Record<string, unknown>;
  const fragments = Object.entries(json).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const run = (from: string, to: string) =>
    fragments
      .filter(([k]) => k > from && k < to)
      .map(([k, value]) => `${JSON.stringify(k)}:${canonicalize(value)!}`)
      .join(",");
  return {
    base,
    pieces: [run("", "lease"), run("lease", "nonce"), run("nonce", "time"), run("time", "\uffff")],
    snapshot: v.snapshot,
    code: v.code,
    valid: v.valid,
    detail: v.detail,
    status: v.license?.effectiveStatus,
  };
}

const ANSWERS_MAX = 50_000;
/** As long as the license snapshots they are made from are kept (validation.service.ts). */
const ANSWERS_TTL_MS = 30_000;

/** The answers of one instance: app.ts creates it, ValidateLicense uses it. */
export class ValidationAnswers {
  private readonly answers: TenantCache<Answer>;
  /**
   * The last time written as JSON: under load, answers signed in the same millisecond
   * share it (toISOString costs a few µs).
   */
  private lastTime = { ms: Number.NaN, json: "" };

  constructor(changes: TenantChanges) {
    this.answers = new TenantCache<Answer>({ max: ANSWERS_MAX, ttlMs: ANSWERS_TTL_MS }).follow(changes);
  }

  /** The answer `v` gives to `question`: the one made before while v says the same of the same license. */
  of(question: Question, v: Validation): Answer {
    const { key, productCode, fingerprint, entitlements, user, components } = question;
    const q =
      v.snapshot &&
      `${key}\u0000${productCode}\u0000${fingerprint}\u0000${entitlements.join("\u0001")}\u0000${user ?? ""}` +
        `\u0000${componentsKey(components)}`;
    const cached = q === undefined ? undefined : this.answers.get(q);
    if (
      cached &&
      cached.snapshot === v.snapshot &&
      cached.code === v.code &&
      cached.valid === v.valid &&
      cached.detail === v.detail &&
      cached.status === v.license?.effectiveStatus
    )
      return cached;
    const answer = answerOf(question, v);
    if (q !== undefined) this.answers.set(q, v.snapshot!.tenantId, answer);
    return answer;
  }

  /** The canonical JSON of the answer with the request's fields (proto3 JSON leaves empty strings out). */
  signingText(answer: Answer, nonce: string, time: Date, lease: string): string {
    const [beforeLease, beforeNonce, beforeTime, afterTime] = answer.pieces;
    let out = "{";
    const add = (part: string) => {
      if (part) out += out.length > 1 ? `,${part}` : part;
    };
    add(beforeLease);
    if (lease) add(`"lease":${JSON.stringify(lease)}`);
    add(beforeNonce);
    if (nonce) add(`"nonce":${JSON.stringify(nonce)}`);
    add(beforeTime);
    add(`"time":"${this.timeJson(time)}"`);
    add(afterTime);
    return `${out}}`;
  }

  /** protobuf's JSON for a millisecond-precision time: RFC 3339, UTC, fraction only when non-zero (as toJson). */
  private timeJson(at: Date): string {
    const ms = at.getTime();
    if (ms === this.lastTime.ms) return this.lastTime.json;
    const iso = at.toISOString();
    this.lastTime = { ms, json: at.getUTCMilliseconds() === 0 ? `${iso.slice(0, -5)}Z` : iso };
    return this.lastTime.json;
  }
}
