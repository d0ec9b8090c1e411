import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/ts/google/rpc/error_details_pb.js";
import { open, seal, secretsEqual } from "../../src/platform/crypto.js";
import { DomainError, notFound, toConnectError } from "../../src/platform/errors.js";
import { newId } from "../../src/platform/ids.js";
import { Interrupt } from "../../src/platform/interrupt.js";
import { PageTokens } from "../../src/platform/pagination.js";
import { deriveDataKeyMaterial } from "../../src/platform/data-key-material.js";

describe("ids", () => {
  it("are prefixed, lowercase and sort by creation", () => {
    const ids = Array.from({ length: 1000 }, () => newId("ten"));
    for (const id of ids) expect(id).toMatch(/^ten_[0-9a-z]{26}$/);
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe("pagination", () => {
  const rows = Array.from({ length: 5 }, (_, i) => ({ id: `id${i}` }));
  // K as the data-key material holds it: HKDF of the data key (docs/api.md).
  const pages = new PageTokens(deriveDataKeyMaterial(Buffer.alloc(32, 7)).pageTokenKey);
  const scope = { list: "x.v1.S/ListThings", tenantId: "ten_a", filters: { t: "a" } };
  it("defaults to 50, returns a token only when more rows exist", () => {
    expect(pages.read(0, "", scope).size).toBe(50);
    expect(pages.read(5000, "", scope).size).toBe(1000);
    const page = pages.read(2, "", scope);
    const first = pages.pageOf(rows.slice(0, 3), page);
    expect(first.items.map((r) => r.id)).toEqual(["id0", "id1"]);
    expect(pages.read(2, first.nextPageToken, scope).after).toBe("id1");
    expect(pages.pageOf(rows.slice(0, 2), page).nextPageToken).toBe("");
  });
  it("writes the format docs/api.md specifies (known answer, computed with Python's hmac and cryptography's HKDF)", () => {
    const page = pages.read(2, "", scope);
    expect(pages.pageOf(rows, page).nextPageToken).toBe("AWlkMUVufzjX78ceQYn7AiIPySI");
  });
  it("refuses tokens forged, altered, or replayed under another list, tenant, filters or key", () => {
    const token = pages.pageOf(rows, pages.read(2, "", scope)).nextPageToken;
    expect(pages.read(2, token, { ...scope, filters: { t: "a", u: undefined } }).after).toBe("id1"); // unset filters are no filter
    for (const other of [
      { ...scope, filters: { t: "b" } },
      { ...scope, tenantId: "ten_b" },
      { ...scope, list: "x.v1.S/ListOthers" },
      { ...scope, filters: {} },
    ]) {
      expect(() => pages.read(2, token, other)).toThrow(/page_token/);
    }
    expect(() => new PageTokens(deriveDataKeyMaterial(Buffer.alloc(32, 8)).pageTokenKey).read(2, token, scope)).toThrow(
      /page_token/,
    );
    for (const forged of [
      "%%%",
      Buffer.from('{"a":"id1","f":"{\\"t\\":\\"a\\"}"}').toString("base64url"),
      token.slice(0, -1),
      `${token}=`,
      `${token}A`,
    ]) {
      expect(() => pages.read(2, forged, scope), forged).toThrow(/page_token/);
    }
  });
});

describe("crypto", () => {
  it("seals and opens with the data key; tampering or another key fails", () => {
    const key = Buffer.alloc(32, 1);
    const sealed = seal(key, Buffer.from("license key"), "lic_1");
    expect(open(key, sealed, "lic_1").toString()).toBe("license key");
    expect(() => open(key, sealed, "lic_2")).toThrow();
    const flipped = Buffer.from(sealed);
    flipped[flipped.length - 1] ^= 1;
    expect(() => open(key, flipped, "lic_1")).toThrow();
    expect(() => open(Buffer.alloc(32, 2), sealed, "lic_1")).toThrow();
  });
  it("compares secrets of any length", () => {
    expect(secretsEqual("abc", "abc")).toBe(true);
    expect(secretsEqual("abc", "abcd")).toBe(false);
  });
});

describe("error mapper", () => {
  it("keeps domain codes and reasons, with ErrorInfo", () => {
    const { error, internal } = toConnectError(notFound("tenant", "ten_x"), "req-1");
    expect(internal).toBe(false);
    expect(error.code).toBe(Code.NotFound);
    const [info] = error.findDetails(ErrorInfoSchema);
    expect(info).toMatchObject({
      reason: "TENANT_NOT_FOUND",
      domain: "licensd.dev",
      metadata: { resource: "tenant", id: "ten_x" },
    });
  });
  it("turns bugs into INTERNAL without leaking the cause", () => {
    const { error, internal } = toConnectError(new Error("password=hunter2 at db.ts:12"), "req-2");
    expect(internal).toBe(true);
    expect(error.code).toBe(Code.Internal);
    expect(error.message).not.toContain("hunter2");
    expect(error.message).toContain("req-2");
  });
  it("reports an unreachable database as UNAVAILABLE", () => {
    const err = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" });
    expect(toConnectError(err, "r").error.code).toBe(Code.Unavailable);
  });
  it("adds ErrorInfo to bare ConnectErrors", () => {
    const { error } = toConnectError(new ConnectError("slow down", Code.ResourceExhausted), "r");
    expect(error.findDetails(ErrorInfoSchema)[0].reason).toBe("RESOURCE_EXHAUSTED");
    expect(new DomainError(Code.Aborted, "X", "y")).toBeInstanceOf(Error);
  });
});

describe("Interrupt", () => {
  it("wakes the waiting turn with the first outcome; turns after it settle at once; later outcomes change nothing", async () => {
    const stop = new Interrupt<string>();
    const turn = stop.next();
    let woken: string | undefined;
    void turn.then((v) => (woken = v));
    await new Promise((resolve) => setImmediate(resolve));
    expect(woken).toBeUndefined();
    stop.raise("revoked");
    stop.raise("aborted");
    expect(await turn).toBe("revoked");
    expect(await stop.next()).toBe("revoked");
  });

  it("keeps none of the turns' outcomes, where racing one long-lived promise keeps them all", async () => {
    v8.setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    /** Races 200 messages, one a turn, with `other()`; how many are still alive after a full collection. */
    const kept = async (other: () => Promise<unknown>) => {
      const sent: WeakRef<object>[] = [];
      for (let i = 0; i < 200; i++) {
        const message = { i };
        sent.push(new WeakRef(message));
        await Promise.race([Promise.resolve(message), other()]);
      }
      await new Promise((resolve) => setImmediate(resolve));
      gc();
      return sent.filter((r) => r.deref() !== undefined).length;
    };
    const stop = new Interrupt<string>();
    expect(await kept(() => stop.next())).toBeLessThanOrEqual(1); // the last turn's, until the next
    const never = new Promise<string>(() => undefined);
    expect(await kept(() => never)).toBe(200);
  });
});
