// How soon a change made on one instance is seen by another (two `licensd serve` processes
// on one database), the latencies the tests only wait for with a bound:
//  - ValidateLicense on B answers SUSPENDED after SuspendLicense on A (B had the license cached);
//  - RecordUsage on B refuses a license suspended on A (B had it cached);
//  - a ConnectLease stream held on B is pushed the revocation of a suspension made on A;
//  - a ConnectLease stream is pushed LICENSE_EXPIRED when its license's expiry passes.
// Baseline: the SuspendLicense round trip on A, measured in the same rounds.
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { ActivationService, type ConnectLeaseRequest } from "../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { LicensingService, ValidationCode } from "../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { UsageService } from "../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { percentile, startBenchServer } from "./support.ts";

const ROUNDS = Number(process.env.BENCH_PROPAGATION_ROUNDS ?? 30);
const GOAL_MS = 1000;

export async function run(): Promise<string> {
  const a = await startBenchServer();
  const b = await startBenchServer({}, a);
  try {
    const { call } = a;
    const tenantId = (await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "bench" })).tenant.id;
    const productId = (
      await call("licensd.licensing.v1.LicensingService/CreateProduct", { tenantId, code: "PRP", name: "Bench" })
    ).product.id;
    await call("licensd.usage.v1.UsageService/CreateMeter", {
      tenantId,
      productId,
      metric: "tokens",
      aggregation: "AGGREGATION_SUM",
    });
    const policyId = (
      await call("licensd.licensing.v1.LicensingService/CreatePolicy", {
        tenantId,
        productId,
        name: "pro",
        floating: true,
        maxMachines: 10,
      })
    ).policy.id;
    const customerId = (
      await call("licensd.licensing.v1.LicensingService/CreateCustomer", {
        tenantId,
        name: "Bench",
        email: "bench@example.com",
      })
    ).customer.id;
    const createLicense = async (extra: Record<string, unknown> = {}) =>
      (await call("licensd.licensing.v1.LicensingService/CreateLicense", {
        tenantId,
        policyId,
        customerId,
        ...extra,
      })) as unknown as { key: string; license: { id: string } };

    const adminA = createClient(
      LicensingService,
      createConnectTransport({
        baseUrl: a.url,
        httpVersion: "1.1",
        interceptors: [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${a.key}`);
            return next(req);
          },
        ],
      }),
    );
    const publicB = createClient(LicensingService, createConnectTransport({ baseUrl: b.url, httpVersion: "1.1" }));
    const usageB = createClient(UsageService, createConnectTransport({ baseUrl: b.url, httpVersion: "1.1" }));
    const streamsB = createClient(ActivationService, createGrpcTransport({ baseUrl: b.url }));
    const activationA = createClient(ActivationService, createConnectTransport({ baseUrl: a.url, httpVersion: "1.1" }));

    /** Suspends on A; resolves with the time the call was sent and its round trip. */
    const suspend = async (id: string) => {
      const sent = performance.now();
      await adminA.suspendLicense({ tenantId, id });
      return { sent, roundTrip: performance.now() - sent };
    };
    /** Calls `probe` back to back until it says yes; the time of the first yes. */
    const pollUntil = async (probe: () => Promise<boolean>) => {
      const deadline = performance.now() + 30_000;
      while (!(await probe()))
        if (performance.now() > deadline) throw new Error("a change was never seen on instance B");
      return performance.now();
    };
    /**
     * Opens a ConnectLease stream on B (one heartbeat: the opening message) once it has its first lease; `revoked` is
     * the receipt of its revocation.
     */
    const leaseOnB = async (key: string, fingerprint: string) => {
      await activationA.activate({ key, fingerprint });
      const abort = new AbortController();
      async function* requests() {
        yield { key, fingerprint } as ConnectLeaseRequest;
        await new Promise((r) => abort.signal.addEventListener("abort", r));
      }
      const responses = streamsB.connectLease(requests(), { signal: abort.signal })[Symbol.asyncIterator]();
      if ((await responses.next()).value?.event.case !== "lease") throw new Error("no first lease");
      const revoked = responses.next().then((r) => {
        const at = performance.now();
        const epochMs = Date.now();
        abort.abort();
        if (r.value?.event.case !== "revocation") throw new Error(`expected a revocation, got ${r.value?.event.case}`);
        return { at, epochMs, reason: r.value.event.value.reason };
      });
      return { revoked };
    };

    const roundTrips: number[] = [];
    const validation: number[] = [];
    const usage: number[] = [];
    const push: number[] = [];
    let seq = 0;
    for (let i = 0; i < ROUNDS; i++) {
      // ValidateLicense on B, license cached there.
      const v = await createLicense();
      for (let j = 0; j < 2; j++)
        if ((await publicB.validateLicense({ key: v.key })).code !== ValidationCode.VALID)
          throw new Error("not valid before suspension");
      const vs = await suspend(v.license.id);
      roundTrips.push(vs.roundTrip);
      validation.push(
        (await pollUntil(
          async () => (await publicB.validateLicense({ key: v.key })).code === ValidationCode.SUSPENDED,
        )) - vs.sent,
      );

      // RecordUsage on B, license cached there.
      const u = await createLicense();
      const record = () =>
        usageB.recordUsage({
          event: { licenseKey: u.key, metric: "tokens", quantity: 1n, idempotencyKey: `u-${++seq}` },
        });
      await record();
      const us = await suspend(u.license.id);
      roundTrips.push(us.roundTrip);
      usage.push(
        (await pollUntil(() =>
          record().then(
            () => false,
            () => true,
          ),
        )) - us.sent,
      );

      // ConnectLease on B, suspension on A.
      const l = await createLicense();
      const { revoked } = await leaseOnB(l.key, "host");
      const ls = await suspend(l.license.id);
      roundTrips.push(ls.roundTrip);
      const pushed = await revoked;
      if (pushed.reason !== "LICENSE_SUSPENDED") throw new Error(`pushed ${pushed.reason}`);
      push.push(pushed.at - ls.sent);
    }

    // Expiry: licenses expiring 8 s from now (time to open every stream first), 100 ms apart, each with a stream open
    // on B.
    const expiry: number[] = [];
    const base = Date.now() + 8_000;
    const expiring = await Promise.all(
      Array.from({ length: ROUNDS }, async (_, i) => {
        const at = base + i * 100;
        const lic = await createLicense({ expireTime: new Date(at).toISOString() });
        return { at, ...(await leaseOnB(lic.key, "host")) };
      }),
    );
    for (const e of expiring) {
      const r = await e.revoked;
      if (r.reason !== "LICENSE_EXPIRED") throw new Error(`pushed ${r.reason}`);
      expiry.push(r.epochMs - e.at);
    }

    const row = (what: string, xs: number[]) => {
      const p99 = percentile(xs, 99);
      return `| ${what} | ${percentile(xs, 50).toFixed(1)} | ${p99.toFixed(1)} | ${Math.max(...xs).toFixed(1)} | ${p99 < GOAL_MS ? "met" : "NOT met"} |`;
    };
    return [
      "## Propagation between instances (bench/propagation.ts)",
      "",
      `Two \`licensd serve\` processes, A and B, on one database (PostgreSQL at 127.0.0.1:5432). ${ROUNDS} rounds; each times a change made on A until B shows it, from the moment SuspendLicense is sent to A (so the times include its round trip, the baseline). B had the license cached (two validations or one usage event before). Validation and usage are polled on B back to back over Connect JSON (HTTP/1.1); the lease stream is gRPC and receives the revocation without asking. Expiry: ${ROUNDS} licenses expiring 100 ms apart (the first 8 s after the run starts them), each with a ConnectLease stream open on B, no heartbeats sent; time from the expiry instant to the pushed LICENSE_EXPIRED (same machine clock).`,
      "",
      `| what | p50 ms | p99 ms | max ms | goal p99 < ${GOAL_MS} ms |`,
      "|---|---:|---:|---:|---:|",
      row("baseline: SuspendLicense round trip on A", roundTrips).replace(/\| (met|NOT met) \|$/, "| — |"),
      row("ValidateLicense on B answers SUSPENDED", validation),
      row("RecordUsage on B refuses the suspended license", usage),
      row("ConnectLease on B pushes LICENSE_SUSPENDED", push),
      row("ConnectLease on B pushes LICENSE_EXPIRED after the expiry instant", expiry),
    ].join("\n");
  } finally {
    await b.stop();
    await a.stop();
  }
}
