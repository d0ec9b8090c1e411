/*
 * listen()'s close(): every answer the server gave reaches its client. An HTTP/2 stream is done for the server when
 * its last data is handed to the session, before its trailers (gRPC's status) and frames reach the socket: cutting
 * the connections at that moment turned calls the server had completed (committed) into CANCELED calls for their
 * clients. Found by the rolling-upgrade drill (test/drills/rolling-upgrade.test.ts) with SIGTERM under load.
 */
import http2 from "node:http2";
import { expect, it } from "vitest";
import { createLogger } from "../../src/platform/logger.js";
import { listen } from "../../src/server.js";

/** A gRPC-shaped answer: headers, a message, then the status in trailers, a few ms after the request. */
async function answeringServer(onRequest: (n: number) => void) {
  let n = 0;
  const server = await listen(
    (_req, anyRes) => {
      const res = anyRes as http2.Http2ServerResponse;
      onRequest(++n);
      setTimeout(
        () => {
          res.writeHead(200, { "content-type": "application/grpc" });
          res.addTrailers({ "grpc-status": "0" });
          res.end(Buffer.alloc(2000, 97));
        },
        5 + Math.random() * 20,
      );
    },
    { host: "127.0.0.1", port: 0, logger: createLogger("silent") },
  );
  return server;
}

/** One call; resolves "ok" when the answer came with its trailers, else with what went wrong. */
function call(session: http2.ClientHttp2Session, endRequest = true) {
  return new Promise<string>((resolve) => {
    const req = session.request({ ":path": "/", ":method": "POST" });
    let n = 0;
    let trailers = false;
    req.on("data", (d: Buffer) => (n += d.length));
    req.on("trailers", () => (trailers = true));
    req.on("end", () => resolve(trailers ? "ok" : `no trailers after ${n} bytes`));
    req.on("error", (e) => resolve(`${e.message} after ${n} bytes`));
    if (endRequest) req.end();
  });
}

it("close() lets every answered call reach its client, trailers included (30 rounds of 40 calls)", async () => {
  const lost: string[] = [];
  for (let round = 0; round < 30; round++) {
    let closing: Promise<void> | undefined;
    const server = await answeringServer((n) => {
      // The drain starts with calls in flight.
      if (n === 20) closing = server.close(5000);
    });
    const session = http2.connect(`http://127.0.0.1:${server.port}`);
    const results = await Promise.all(Array.from({ length: 40 }, () => call(session)));
    await closing;
    session.destroy();
    // Calls the server took (all of them reached it before the GOAWAY here) must all be answered.
    lost.push(...results.filter((r) => r !== "ok"));
  }
  expect(lost).toEqual([]);
});

it("close() still ends when a client never ends its request side, with the answer delivered", async () => {
  let closing: Promise<void> | undefined;
  const server = await answeringServer(() => {
    closing = server.close(5000);
  });
  const session = http2.connect(`http://127.0.0.1:${server.port}`);
  expect(await call(session, false)).toBe("ok");
  await closing;
  expect(server.inFlight()).toBe(0);
  session.destroy();
});
