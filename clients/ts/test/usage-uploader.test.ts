// UsageUploader against a live licensd on a real port (and PostgreSQL): a connection cut in the
// middle of an upload, events the server refuses, a permanent error, and what `record` refuses.
import { mkdtempSync, readdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  type InvalidUsageEventError,
  type RejectedUsageEvent,
  SpoolFullError,
  UsageStreamError,
  UsageUploader,
} from "@licensd/client/node";
import { ActivationService } from "@licensd/client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServerProcess, startServer } from "../../../test/support/server.js";
import { TcpProxy } from "../../../test/support/tcp-proxy.js";
import { until, within } from "../../../test/support/wait.js";
import { storedEvents, timesEachSeq, vendor } from "./usage-uploader-support.js";

// The real `licensd serve` (built by `npm run build`, as `npm test` does first) on a fresh database.
let app: ServerProcess & { dropDatabase(): Promise<void> };
beforeAll(async () => {
  app = await startServer();
});
afterAll(async () => {
  await app?.stop();
  await app?.dropDatabase();
});

const spoolDir = () => mkdtempSync(path.join(os.tmpdir(), "licensd-uploader-"));
const segments = (dir: string) => readdirSync(dir).filter((n) => n.endsWith(".jsonl"));
const grpc = (url: string) => createGrpcTransport({ baseUrl: url });

describe("UsageUploader", () => {
  it("delivers every recorded event exactly once through a connection cut mid-upload", async () => {
    const v = await vendor(app.url, app.superAdminKey, "UPD");
    const license = await v.license();
    const port = Number(new URL(app.url).port);
    const proxy = new TcpProxy({ host: "127.0.0.1", port });
    const proxyPort = await proxy.start();
    const dir = spoolDir();
    let cut: Promise<unknown> | undefined;
    let ackedAtCut = 0;
    const uploader = new UsageUploader({
      dir,
      transport: grpc(`http://127.0.0.1:${proxyPort}`),
      licenseKey: license.key,
      agentId: "coder",
      batchSize: 50,
      window: 4,
      backoff: { initialMs: 50, maxMs: 400 },
      onProgress: (s) => {
        // Cut every connection after some acks, and let the agent back in a moment later.
        if (cut || s.acked < 600) return;
        ackedAtCut = s.acked;
        cut = proxy
          .cut()
          .then(() => new Promise((r) => setTimeout(r, 300)))
          .then(() => proxy.start(proxyPort));
      },
    });
    const N = 3000;
    const keys = await Promise.all(
      Array.from({ length: N }, (_, i) => uploader.record("tokens", 1 + (i % 7), { seq: String(i) })),
    );
    await within(uploader.flush(), "flush after the cut");
    await cut;
    const stats = uploader.stats();
    await uploader.close();
    await proxy.cut();

    expect(ackedAtCut).toBeGreaterThanOrEqual(600);
    expect(ackedAtCut).toBeLessThan(N);
    expect(stats.lastError).toBeInstanceOf(UsageStreamError);
    expect(stats.lastError!.permanent).toBe(false);
    expect(stats).toMatchObject({ pending: 0, rejected: 0, halted: false });
    expect(stats.acked).toBeGreaterThanOrEqual(N);
    const stored = await storedEvents(v.usage, license.id);
    expect(stored).toHaveLength(N);
    expect([...timesEachSeq(stored).values()].every((n) => n === 1)).toBe(true);
    expect(new Set(stored.map((e) => e.idempotencyKey))).toEqual(new Set(keys));
    expect(stored.reduce((n, e) => n + e.quantity, 0n)).toBe(
      BigInt(Array.from({ length: N }, (_, i) => 1 + (i % 7)).reduce((a, b) => a + b, 0)),
    );
    expect(stored.every((e) => e.agentId === "coder")).toBe(true);
    // Everything acknowledged: the spool's segments are gone.
    expect(segments(dir)).toEqual([]);
  });

  it("reports the events the server refuses (revoked license, unknown metric) and does not send them again", async () => {
    const v = await vendor(app.url, app.superAdminKey, "UPR");
    const good = await v.license();
    const revoked = await v.license();
    await v.licensing.revokeLicense({ id: revoked.id });
    const rejected: RejectedUsageEvent[] = [];
    const dir = spoolDir();
    const uploader = new UsageUploader({
      dir,
      transport: grpc(app.url),
      apiKey: v.ingestKey,
      onRejected: (events) => rejected.push(...events),
    });
    await uploader.record("tokens", 3, { seq: "0" }, { licenseId: revoked.id });
    await uploader.record("nope", 4, { seq: "1" }, { licenseId: good.id });
    await uploader.record("tokens", 5, { seq: "2" }, { licenseId: good.id });
    await within(uploader.flush(), "flush");
    expect(rejected.map((e) => [e.attributes.seq, e.reason, e.licenseId, e.metric, e.quantity])).toEqual([
      ["0", "LICENSE_REVOKED", revoked.id, "tokens", 3],
      ["1", "UNKNOWN_METRIC", good.id, "nope", 4],
    ]);
    expect(uploader.stats()).toMatchObject({ pending: 0, acked: 1, rejected: 2, halted: false });
    await uploader.close();
    expect((await storedEvents(v.usage, good.id)).map((e) => [e.attributes.seq, e.quantity])).toEqual([["2", 5n]]);
    // Refused events are settled: a restart on the spool has nothing to send.
    const again = new UsageUploader({ dir, transport: grpc(app.url), apiKey: v.ingestKey });
    await again.ready();
    expect(again.stats().pending).toBe(0);
    await again.close();
  });

  it("stops on a wrong API key without losing events; a restart with the right key delivers them once", async () => {
    const v = await vendor(app.url, app.superAdminKey, "UPK");
    const license = await v.license();
    const dir = spoolDir();
    const errors: UsageStreamError[] = [];
    const wrong = new UsageUploader({
      dir,
      transport: grpc(app.url),
      apiKey: "lsk_not_a_key",
      licenseId: license.id,
      onError: (e) => errors.push(e),
    });
    for (let i = 0; i < 10; i++) await wrong.record("tokens", 2, { seq: String(i) });
    const failure = await within(
      wrong.flush().then(
        () => undefined,
        (e: unknown) => e,
      ),
      "flush to fail",
    );
    expect(failure).toBeInstanceOf(UsageStreamError);
    expect(failure).toMatchObject({ code: Code.Unauthenticated, permanent: true });
    expect(errors).toEqual([failure]);
    expect(wrong.stats()).toMatchObject({ halted: true, pending: 10, acked: 0 });
    await wrong.close();

    const right = new UsageUploader({ dir, transport: grpc(app.url), apiKey: v.ingestKey, licenseId: license.id });
    await within(right.flush(), "flush with the right key");
    expect(right.stats()).toMatchObject({ pending: 0, acked: 10, halted: false });
    await right.close();
    const stored = await storedEvents(v.usage, license.id);
    expect(stored).toHaveLength(10);
    expect([...timesEachSeq(stored).values()].every((n) => n === 1)).toBe(true);
  });

  it("names the license by the agent's current lease, read as each batch is sent", async () => {
    const v = await vendor(app.url, app.superAdminKey, "UPL");
    const license = await v.license();
    const { lease } = await createClient(ActivationService, grpc(app.url)).activate({
      key: license.key,
      fingerprint: "agent-box",
    });
    let current: string | undefined;
    const uploader = new UsageUploader({
      dir: spoolDir(),
      transport: grpc(app.url),
      lease: () => current,
      backoff: { initialMs: 50, maxMs: 200 },
    });
    for (let i = 0; i < 5; i++) await uploader.record("tokens", 10, { seq: String(i) });
    // No lease yet: nothing is sent (and nothing is lost), the reason is reported.
    await until("the missing lease to be reported", () => uploader.stats().lastError?.message ?? "");
    expect(uploader.stats()).toMatchObject({ sent: 0, pending: 5, halted: false });
    expect(uploader.stats().lastError!.message).toMatch(/no lease/);
    current = lease!.token;
    await within(uploader.flush(), "flush once the lease is there");
    expect(uploader.stats()).toMatchObject({ sent: 5, acked: 5, pending: 0 });
    await uploader.close();
    const stored = await storedEvents(v.usage, license.id);
    expect(stored.map((e) => e.attributes.seq).sort()).toEqual(["0", "1", "2", "3", "4"]);
  });

  it("refuses what the server would refuse as malformed, and records past maxSpoolBytes, writing nothing", async () => {
    const dir = spoolDir();
    // Nothing listens on port 9 here: nothing is acknowledged, so the spool fills.
    const uploader = new UsageUploader({
      dir,
      transport: grpc("http://127.0.0.1:9"),
      licenseKey: "key",
      maxSpoolBytes: 8192,
      backoff: { initialMs: 1000 },
    });
    const refusals = await Promise.all(
      [
        () => uploader.record("Bad Metric", 1),
        () => uploader.record("tokens", -1),
        () => uploader.record("tokens", 1.5),
        () => uploader.record("tokens", 2n ** 53n),
        () => uploader.record("tokens", 1, Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, "v"]))),
        () => uploader.record("tokens", 1, { k: "x".repeat(257) }),
        () => uploader.record("tokens", 1, {}, { licenseId: "not-an-id" }),
      ].map((f) =>
        f().then(
          () => undefined,
          (e: InvalidUsageEventError) => [e.name, e.field],
        ),
      ),
    );
    expect(refusals).toEqual([
      ["InvalidUsageEventError", "metric"],
      ["InvalidUsageEventError", "quantity"],
      ["InvalidUsageEventError", "quantity"],
      ["InvalidUsageEventError", "quantity"],
      ["InvalidUsageEventError", "attributes"],
      ["InvalidUsageEventError", "attributes.k"],
      ["InvalidUsageEventError", "license_id"],
    ]);
    expect(uploader.stats().pending).toBe(0);
    let recorded = 0;
    let full: unknown;
    while (!full) {
      await uploader.record("tokens", 1).then(
        () => recorded++,
        (e: unknown) => (full = e),
      );
    }
    expect(full).toBeInstanceOf(SpoolFullError);
    expect(uploader.stats()).toMatchObject({ pending: recorded, refused: 1 });
    expect(uploader.stats().spoolBytes).toBeLessThanOrEqual(8192);
    await uploader.close();
  });
});
