/* A webhook receiver in the test process on 127.0.0.1, checking every signature (webhooks-scale, the cluster suite). */
import { verifyWebhook } from "@licensd/client";
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface Receipt {
  id: string;
  /** Date.now() when the request's body had arrived. */
  at: number;
  verified: boolean;
  failure: string;
}

/** A webhook receiver on 127.0.0.1 answering 204 (after `holdMs`), checking every signature with the endpoint's secret. */
export async function startReceiver(holdMs = 0) {
  const receipts: Receipt[] = [];
  const state = { secret: "" };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const v = verifyWebhook(new Uint8Array(Buffer.concat(chunks)), req.headers, state.secret);
      receipts.push({
        id: String(req.headers["webhook-id"]),
        at: Date.now(),
        verified: v.ok,
        failure: v.ok ? "" : v.reason,
      });
      setTimeout(() => {
        res.writeHead(204);
        res.end();
      }, holdMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/licensd`,
    receipts,
    state,
    distinct: () => new Set(receipts.map((r) => r.id)).size,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
export type Receiver = Awaited<ReturnType<typeof startReceiver>>;
