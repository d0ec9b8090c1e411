import { readFileSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { Logger } from "./platform/logger.js";

export type RequestHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

export interface ServerOptions {
  host: string;
  port: number;
  tls?: { cert: string; key: string };
  logger: Logger;
}

export interface RunningServer {
  port: number;
  /** Requests (unary calls and open streams) being served now. */
  inFlight(): number;
  /** Stops accepting, lets in-flight requests finish for up to `timeoutMs`, then cuts the rest. */
  close(timeoutMs: number, onDraining?: () => void): Promise<void>;
}

/**
 * HTTP/2 flow-control windows: how much a client may send before the server acknowledges
 * it. The protocol's default, 64 KiB per stream and per connection, is about one batch of
 * 500 usage events: an agent streaming usage would wait on a window update from this
 * server's event loop for every batch. 256 KiB per stream is about four batches on the
 * wire, which StreamUsage reads ahead (MAX_UNACKED_BATCHES) as they come; 1 MiB per
 * connection, four such streams. Larger windows only queue batches longer before the
 * server reads them (BENCHMARKS.md, "Design history"). Node's maxSessionMemory (10 MB)
 * still bounds what one connection may make the server buffer.
 */
const H2_SETTINGS: http2.Settings = { initialWindowSize: 256 << 10 };
const H2_CONNECTION_WINDOW = 1 << 20;
/** How long, once every call is answered, connections get to deliver the answers and close before they are cut. */
const LINGER_MS = 1000;
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * One listening port for every protocol: gRPC, gRPC-Web and Connect, over HTTP/1.1 and
 * HTTP/2. With TLS, ALPN picks the version. In cleartext, Node's HTTP/2 server does not
 * fall back to HTTP/1.1, so the first bytes of each connection are read: the HTTP/2
 * client preface goes to the h2c server, anything else to the HTTP/1.1 server.
 */
export async function listen(handler: RequestHandler, opts: ServerOptions): Promise<RunningServer> {
  let active = 0;
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.Http2Session>();
  const counted: RequestHandler = (req, res) => {
    active++;
    // Done when the response is finished (a client may keep its request side of a
    // finished stream open; that is not work in flight) or the stream closes.
    let done = false;
    const release = () => {
      if (!done) active--;
      done = true;
    };
    // HTTP/2: the stream's writable side; HTTP/1.1: the response itself.
    const out = "stream" in res ? (res as http2.Http2ServerResponse).stream : res;
    out.once("finish", release);
    res.once("close", release);
    handler(req, res);
  };

  let outer: net.Server;
  let h1: http.Server | undefined;
  let h2: http2.Http2Server | http2.Http2SecureServer;
  if (opts.tls) {
    h2 = http2.createSecureServer(
      {
        cert: readFileSync(opts.tls.cert),
        key: readFileSync(opts.tls.key),
        allowHTTP1: true,
        settings: H2_SETTINGS,
        noDelay: true,
      },
      counted as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
    );
    outer = h2;
  } else {
    h1 = http.createServer(counted as http.RequestListener);
    h1.keepAliveTimeout = 65_000;
    h2 = http2.createServer(
      { settings: H2_SETTINGS },
      counted as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
    );
    const [h1s, h2s] = [h1, h2];
    // TCP_NODELAY on every accepted socket, as Node's own http.Server sets by default: the
    // sockets are accepted here, not by h1 or h2, so theirs never applies.
    outer = net.createServer({ noDelay: true }, (socket) => {
      sniff(socket, (isH2) => (isH2 ? h2s : h1s).emit("connection", socket));
    });
  }
  h2.on("session", (session: http2.Http2Session) => {
    sessions.add(session);
    session.setLocalWindowSize(H2_CONNECTION_WINDOW);
    session.once("close", () => sessions.delete(session));
  });
  outer.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  await new Promise<void>((resolve, reject) => {
    outer.once("error", reject);
    outer.listen(opts.port, opts.host, () => {
      outer.off("error", reject);
      resolve();
    });
  });
  const port = (outer.address() as net.AddressInfo).port;

  return {
    port,
    inFlight: () => active,
    async close(timeoutMs, onDraining) {
      const closed = new Promise<void>((resolve) => outer.close(() => resolve()));
      h1?.close();
      h1?.closeIdleConnections();
      for (const session of sessions) session.close();
      onDraining?.();
      const deadline = Date.now() + timeoutMs;
      while (active > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 25));
        h1?.closeIdleConnections();
      }
      if (active > 0) opts.logger.warn({ inFlight: active }, "shutdown timeout: cutting remaining requests");
      else {
        // Every answer is written, not yet sent: an HTTP/2 stream's "finish" means its last data went to the session
        // (its trailers, with gRPC's status, go after it), not to the socket. Cut now, and a call the server completed
        // (committed) reaches its client as CANCELED. Each session ends by itself once its streams are done and its
        // frames flushed; HTTP/1.1 connections end once idle. One a client keeps open (a stream whose request side it
        // never ends) is cut after LINGER_MS.
        const linger = Math.min(deadline, Date.now() + LINGER_MS);
        while (sockets.size > 0 && Date.now() < linger) {
          await new Promise((r) => setTimeout(r, 10));
          h1?.closeIdleConnections();
        }
      }
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

/**
 * Reads (in paused mode, so nothing is consumed behind our back) until the first bytes
 * tell HTTP/2's preface from an HTTP/1.1 request line, puts them back, and hands the
 * socket over. Node's HTTP/2 session takes over the socket's native handle; bytes read
 * in flowing mode ('data' events) would be lost to it, bytes unshifted here are not.
 */
function sniff(socket: net.Socket, route: (isH2: boolean) => void) {
  let seen = Buffer.alloc(0);
  const onReadable = () => {
    for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) {
      seen = Buffer.concat([seen, chunk]);
    }
    if (seen.length === 0) return;
    const n = Math.min(seen.length, H2_PREFACE.length);
    const isH2 = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
    if (isH2 && n < H2_PREFACE.length) return; // a prefix of the preface so far: read on
    socket.off("readable", onReadable);
    socket.off("error", onError);
    socket.unshift(seen);
    route(isH2);
  };
  const onError = () => socket.destroy();
  socket.on("readable", onReadable);
  socket.on("error", onError);
}
