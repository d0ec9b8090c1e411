import http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * What a call ended with, as a client sees it: Connect's code name (`invalid_argument`),
 * `ok`, or a description of an answer that is not a valid Connect/gRPC answer at all
 * (`http 500 (no Connect error body)`), which the fuzz suite counts as a failure.
 */
export interface Outcome {
  code: string;
  message: string;
}

/** Codes a client's mistake may get; anything else (internal, unknown, unavailable, …) is a server bug. */
export const CLIENT_CODES = new Set([
  "ok",
  "invalid_argument",
  "unauthenticated",
  "permission_denied",
  "not_found",
  "failed_precondition",
  "already_exists",
  "resource_exhausted",
  "out_of_range",
]);

/** `InvalidArgument` (the Code enum's name) → `invalid_argument` (Connect's wire name). */
export const codeName = (code: Code) => Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();

export function outcomeOf(err: unknown): Outcome {
  const e = ConnectError.from(err);
  return { code: codeName(e.code), message: e.rawMessage };
}

/** A Connect unary call with a body of our own making (bytes or text), over HTTP/1.1. */
export async function connectUnaryRaw(
  baseUrl: string,
  procedure: string,
  body: Uint8Array | string,
  opts: { contentType: string; headers?: Record<string, string> },
): Promise<Outcome> {
  const res = await fetch(`${baseUrl}/${procedure}`, {
    method: "POST",
    headers: { "content-type": opts.contentType, "connect-protocol-version": "1", ...opts.headers },
    body,
  });
  return connectAnswer(res);
}

/** A Connect GET (`?encoding=…&message=…`) with a query of our own making. */
export async function connectGetRaw(
  baseUrl: string,
  procedure: string,
  query: string,
  headers: Record<string, string> = {},
): Promise<Outcome> {
  const res = await fetch(`${baseUrl}/${procedure}?${query}`, { headers });
  return connectAnswer(res);
}

async function connectAnswer(res: Response): Promise<Outcome> {
  const text = Buffer.from(await res.arrayBuffer());
  if (res.status === 200) return { code: "ok", message: "" };
  try {
    const body = JSON.parse(text.toString("utf8")) as { code?: unknown; message?: unknown };
    if (typeof body.code === "string")
      return { code: body.code, message: typeof body.message === "string" ? body.message : "" };
  } catch {
    // not a Connect error body: reported below
  }
  return { code: `http ${res.status} (no Connect error body)`, message: text.toString("utf8").slice(0, 200) };
}

const GRPC_CODES: Record<string, string> = Object.fromEntries(
  Object.values(Code)
    .filter((c): c is Code => typeof c === "number")
    .map((c) => [String(c), codeName(c)]),
);
GRPC_CODES["0"] = "ok";

/** A stream still open after it started answering: accepted; the client hangs up. */
function leaveOpen(req: http2.ClientHttp2Stream, finish: (o: Outcome) => void) {
  finish({ code: "ok", message: "the stream is open" });
  if (!req.closed) req.close(http2.constants.NGHTTP2_CANCEL);
}

/**
 * Stops sending a body the server answered without reading (a reset only then: Node limits how often a peer resets).
 */
function abandonBody(req: http2.ClientHttp2Stream) {
  if (!req.writableFinished && !req.closed) req.close(http2.constants.NGHTTP2_CANCEL);
}

/**
 * gRPC and Connect streams over raw HTTP/2, for frames no client library would send: the
 * body is written as given (any number of chunks) and the answer read from grpc-status
 * or the end-of-stream message.
 */
export class RawH2 {
  private sessions = new Set<http2.ClientHttp2Session>();

  constructor(private readonly baseUrl: string) {}

  /**
   * A connection per call, as independent clients would open: Node's HTTP/2 server ends
   * a connection that keeps sending broken frames (ENHANCE_YOUR_CALM), which would
   * otherwise turn every later case into that one answer.
   */
  private connect(): http2.ClientHttp2Session {
    const session = http2.connect(this.baseUrl, { maxSessionMemory: 256 });
    session.on("error", () => undefined);
    this.sessions.add(session);
    session.on("close", () => this.sessions.delete(session));
    return session;
  }

  /**
   * `openMs`: for a stream that may never end (an audit tail), an answer that started
   * (headers, no status) and stays open this long counts as accepted; the client leaves.
   */
  grpc(
    procedure: string,
    chunks: Buffer[],
    headers: Record<string, string> = {},
    opts: { timeoutMs?: number; openMs?: number } = {},
  ): Promise<Outcome> {
    const timeoutMs = opts.timeoutMs ?? 15_000;
    return new Promise((resolve) => {
      let done = false;
      const finish = (o: Outcome) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(o);
      };
      const timer = setTimeout(() => {
        req.close(http2.constants.NGHTTP2_CANCEL);
        finish({ code: "no answer (timeout)", message: `no grpc-status within ${timeoutMs} ms` });
      }, timeoutMs);
      const req = this.connect().request({
        ":method": "POST",
        ":path": `/${procedure}`,
        "content-type": "application/grpc",
        te: "trailers",
        ...headers,
      });
      const abandon = () => abandonBody(req);
      req.on("close", () => req.session?.close());
      let status: string | undefined;
      let message = "";
      // The answer is complete with its grpc-status (the server need not read a body it refused).
      const read = (h: http2.IncomingHttpHeaders) => {
        if (h["grpc-status"] !== undefined) {
          status = String(h["grpc-status"]);
          message = decodeURIComponent(String(h["grpc-message"] ?? ""));
          finish({ code: GRPC_CODES[status] ?? `grpc-status ${status}`, message });
          abandon();
        }
      };
      let httpStatus = 0;
      req.on("response", (h) => {
        httpStatus = Number(h[":status"]);
        read(h);
        if (!done && opts.openMs !== undefined) setTimeout(() => leaveOpen(req, finish), opts.openMs).unref();
      });
      req.on("trailers", read);
      req.on("data", () => undefined);
      req.on("error", (err) => finish({ code: `stream error: ${err.message}`, message: "" }));
      const end = () => {
        if (status !== undefined) finish({ code: GRPC_CODES[status] ?? `grpc-status ${status}`, message });
        else finish({ code: `http ${httpStatus} without grpc-status`, message: "" });
      };
      req.on("end", end);
      req.on("close", end);
      for (const c of chunks) req.write(c);
      req.end();
    });
  }

  /**
   * A Connect streaming call (enveloped messages) over a raw HTTP/2 stream; the answer is
   * the end-of-stream envelope's error, or ok.
   */
  connectStream(
    procedure: string,
    chunks: Buffer[],
    headers: Record<string, string> = {},
    opts: { timeoutMs?: number; openMs?: number } = {},
  ): Promise<Outcome> {
    const timeoutMs = opts.timeoutMs ?? 15_000;
    return new Promise((resolve) => {
      let done = false;
      const finish = (o: Outcome) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(o);
      };
      const timer = setTimeout(() => {
        req.close(http2.constants.NGHTTP2_CANCEL);
        finish({ code: "no answer (timeout)", message: `the stream did not end within ${timeoutMs} ms` });
      }, timeoutMs);
      const req = this.connect().request({
        ":method": "POST",
        ":path": `/${procedure}`,
        "content-type": "application/connect+proto",
        ...headers,
      });
      const abandon = () => abandonBody(req);
      req.on("close", () => req.session?.close());
      let status = 0;
      const body: Buffer[] = [];
      req.on("response", (h) => {
        status = Number(h[":status"]);
        if (status === 200 && opts.openMs !== undefined) setTimeout(() => leaveOpen(req, finish), opts.openMs).unref();
      });
      req.on("data", (d: Buffer) => body.push(d));
      req.on("error", (err) => finish({ code: `stream error: ${err.message}`, message: "" }));
      const end = () => {
        const all = Buffer.concat(body);
        if (status !== 200) {
          try {
            const err = JSON.parse(all.toString("utf8")) as { code?: string; message?: string };
            if (typeof err.code === "string") return finish({ code: err.code, message: err.message ?? "" });
          } catch {
            // reported below
          }
          return finish({
            code: `http ${status} (no Connect error body)`,
            message: all.toString("utf8").slice(0, 200),
          });
        }
        for (let at = 0; at + 5 <= all.length; ) {
          const flags = all[at];
          const len = all.readUInt32BE(at + 1);
          const payload = all.subarray(at + 5, at + 5 + len);
          at += 5 + len;
          if (flags & 2) {
            try {
              const end = JSON.parse(payload.toString("utf8")) as { error?: { code?: string; message?: string } };
              return finish(
                end.error
                  ? { code: end.error.code ?? "(no code)", message: end.error.message ?? "" }
                  : { code: "ok", message: "" },
              );
            } catch {
              return finish({
                code: "unreadable end-of-stream message",
                message: payload.toString("utf8").slice(0, 200),
              });
            }
          }
        }
        finish({ code: "no end-of-stream message", message: "" });
      };
      // The answer is complete when the server ends its side (it need not read a body it refused).
      req.on("end", () => {
        end();
        abandon();
      });
      req.on("close", end);
      for (const c of chunks) req.write(c);
      req.end();
    });
  }

  close() {
    for (const s of this.sessions) s.close();
  }
}
