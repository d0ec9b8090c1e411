/*
 * verifyWebhook against the Standard Webhooks reference library (the `standardwebhooks`
 * npm package): what it signs verifies here, what a small signer of ours produces verifies
 * there, and both refuse the same tampered deliveries. Then docs/test-vectors.json's
 * `webhooks` cases, which the Python and Go clients check too.
 */
import { createHmac, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import { verifyWebhook, type WebhookHeaders } from "../src/index.js";

const FILE = path.join(import.meta.dirname, "..", "..", "..", "docs", "test-vectors.json");

const newSecret = () => `whsec_${randomBytes(32).toString("base64")}`;

/** Our test signer: what licensd's dispatcher sends (docs/formats.md, Webhook signatures). */
function signed(secrets: string[], body: string, at = new Date(), id = "evt_test") {
  const ts = Math.floor(at.getTime() / 1000);
  const signature = secrets
    .map((s) =>
      createHmac("sha256", Buffer.from(s.slice(6), "base64"))
        .update(`${id}.${ts}.${body}`)
        .digest("base64"),
    )
    .map((b) => `v1,${b}`)
    .join(" ");
  return { "webhook-id": id, "webhook-timestamp": String(ts), "webhook-signature": signature };
}

const body = JSON.stringify({ type: "license.created", timestamp: "2027-01-01T00:00:00Z", data: { id: "lic_1 ✓" } });

/** The reference library's verdict: true, or its error message. */
function reference(secret: string, payload: string, headers: Record<string, string>) {
  try {
    new Webhook(secret).verify(payload, headers);
    return true;
  } catch (e) {
    return (e as Error).message;
  }
}

describe("verifyWebhook and the standardwebhooks reference library", () => {
  it("verifies what the reference library signs", () => {
    const secret = newSecret();
    const at = new Date();
    const signature = new Webhook(secret).sign("msg_1", at, body);
    const headers = { "webhook-id": "msg_1", "webhook-timestamp": String(Math.floor(at.getTime() / 1000)) };
    const r = verifyWebhook(body, { ...headers, "webhook-signature": signature }, secret);
    expect(r).toEqual({
      ok: true,
      id: "msg_1",
      timestamp: new Date(Math.floor(at.getTime() / 1000) * 1000),
      event: JSON.parse(body),
    });
    // Bytes as well as strings, and a fetch Headers object.
    const h = new Headers({ ...headers, "Webhook-Signature": signature });
    expect(verifyWebhook(new TextEncoder().encode(body), h, secret).ok).toBe(true);
  });

  it("produces signatures the reference library accepts", () => {
    const secret = newSecret();
    const headers = signed([secret], body);
    expect(reference(secret, body, headers)).toBe(true);
    expect(verifyWebhook(body, headers, secret).ok).toBe(true);
  });

  it("accepts any one valid signature of several (secret rotation), as the reference does", () => {
    const [old, current] = [newSecret(), newSecret()];
    const headers = signed([old, current], body);
    for (const s of [old, current]) {
      expect(reference(s, body, headers)).toBe(true);
      expect(verifyWebhook(body, headers, s).ok).toBe(true);
    }
    const other = newSecret();
    expect(reference(other, body, headers)).not.toBe(true);
    expect(verifyWebhook(body, headers, other)).toMatchObject({ ok: false, reason: "BAD_SIGNATURE" });
  });

  it("refuses tampered body, id and timestamp, and another secret, as the reference does", () => {
    const secret = newSecret();
    const headers = signed([secret], body);
    const ts = Number(headers["webhook-timestamp"]);
    const tampered: [string, string, Record<string, string>][] = [
      ["body", body.replace("created", "deleted"), headers],
      ["id", body, { ...headers, "webhook-id": "evt_other" }],
      ["timestamp", body, { ...headers, "webhook-timestamp": String(ts - 1) }],
      ["signature", body, { ...headers, "webhook-signature": `v1,${Buffer.alloc(32).toString("base64")}` }],
    ];
    for (const [what, payload, h] of tampered) {
      expect(reference(secret, payload, h), what).not.toBe(true);
      expect(verifyWebhook(payload, h, secret), what).toMatchObject({ ok: false, reason: "BAD_SIGNATURE" });
    }
    expect(reference(newSecret(), body, headers)).not.toBe(true);
    expect(verifyWebhook(body, headers, newSecret())).toMatchObject({ ok: false, reason: "BAD_SIGNATURE" });
  });

  it("refuses expired and future deliveries (5 minutes either way), as the reference does", () => {
    const secret = newSecret();
    const now = Date.now();
    for (const offset of [-301, 301, -3600, 86_400]) {
      const h = signed([secret], body, new Date(now + offset * 1000));
      expect(reference(secret, body, h), `offset ${offset}`).toMatch(/timestamp/i);
      expect(verifyWebhook(body, h, secret, { now }), `offset ${offset}`).toMatchObject({
        ok: false,
        reason: "TIMESTAMP_OUT_OF_TOLERANCE",
      });
    }
    for (const offset of [-299, 0, 299]) {
      const h = signed([secret], body, new Date(now + offset * 1000));
      expect(verifyWebhook(body, h, secret, { now }).ok, `offset ${offset}`).toBe(true);
    }
    // `now` decides, not the clock: an old delivery verifies at its own time.
    const old = signed([secret], body, new Date("2027-01-01T00:00:00Z"));
    expect(verifyWebhook(body, old, secret, { now: new Date("2027-01-01T00:04:00Z") }).ok).toBe(true);
    expect(verifyWebhook(body, old, secret, { now: new Date("2027-01-01T00:04:00Z"), toleranceSeconds: 60 }).ok).toBe(
      false,
    );
  });

  it("answers bad input with a reason, never an exception", () => {
    const secret = newSecret();
    const h = signed([secret], body);
    const cases: [WebhookHeaders, string, string, string][] = [
      [{}, secret, body, "MISSING_HEADERS"],
      [{ ...h, "webhook-id": "" }, secret, body, "MISSING_HEADERS"],
      [{ "webhook-id": "a", "webhook-timestamp": "1" }, secret, body, "MISSING_HEADERS"],
      [h, secret.slice(6), body, "BAD_SECRET"],
      [h, "whsec_", body, "BAD_SECRET"],
      [h, "whsec_not base64!", body, "BAD_SECRET"],
      [{ ...h, "webhook-timestamp": "soon" }, secret, body, "MALFORMED"],
      [{ ...h, "webhook-timestamp": "-5" }, secret, body, "MALFORMED"],
      [{ ...h, "webhook-signature": "garbage v1,@@@ v1" }, secret, body, "BAD_SIGNATURE"],
    ];
    for (const [headers, s, payload, reason] of cases)
      expect(verifyWebhook(payload, headers, s), reason).toMatchObject({ ok: false, reason });
    // A correctly signed body that is not JSON.
    const notJson = "not json";
    expect(verifyWebhook(notJson, signed([secret], notJson), secret)).toMatchObject({ ok: false, reason: "MALFORMED" });
    // Node's req.headers: lower-case names, repeated headers as arrays.
    const split = { ...h, "webhook-signature": [`v1,${Buffer.alloc(32).toString("base64")}`, h["webhook-signature"]] };
    expect(verifyWebhook(body, split, secret).ok).toBe(true);
  });
});

interface WebhookCase {
  name: string;
  secret: string;
  payload: string;
  headers: Record<string, string>;
  now: number;
  expect: string;
}

describe("docs/test-vectors.json webhooks", () => {
  const v = JSON.parse(readFileSync(FILE, "utf8")) as { webhooks: { cases: WebhookCase[] } };
  const cases = v.webhooks.cases;

  it("has the cases every client checks", () => {
    expect(cases.length).toBeGreaterThan(10);
    expect(new Set(cases.map((c) => c.expect))).toEqual(
      new Set(["OK", "BAD_SIGNATURE", "TIMESTAMP_OUT_OF_TOLERANCE", "MISSING_HEADERS", "BAD_SECRET", "MALFORMED"]),
    );
  });

  it.each(cases.map((c) => [c.name, c] as const))("%s", (_, c) => {
    const r = verifyWebhook(c.payload, c.headers, c.secret, { now: c.now * 1000 });
    expect(r.ok ? "OK" : r.reason).toBe(c.expect);
    if (r.ok) expect(r).toMatchObject({ id: c.headers["webhook-id"], event: JSON.parse(c.payload) });
  });

  it("agrees with the reference library on the signature cases", () => {
    // The reference checks against the real clock; only cases valid at `now` are meaningful there.
    for (const c of cases.filter((x) => x.expect === "OK" && x.now === Number(x.headers["webhook-timestamp"]))) {
      const at = Math.floor(Date.now() / 1000);
      // Re-stamp: same secret, id and body, signed now by the reference, verified by ours at now.
      const sig = new Webhook(c.secret).sign(c.headers["webhook-id"]!, new Date(at * 1000), c.payload);
      const h = { ...c.headers, "webhook-timestamp": String(at), "webhook-signature": sig };
      expect(verifyWebhook(c.payload, h, c.secret).ok, c.name).toBe(true);
    }
  });
});
