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
export async function connectUnaryRaw(baseUrl: string, procedure: string, body: Uint8Array | string, opts: { contentType: string; headers?: Record<string, string> }): Promise<Outcome> {
  const res = await fetch(`${baseUrl}/${procedure}`, {
    method: "POST",
    headers: { "content-type": opts.contentType, "connect-protocol-version": "1", ...opts.headers },
    body,
  });
  return connectAnswer(res);
}

/** A Connect GET (`?encoding=…&message=…`) with a query of our own making. */
export async function connectGetRaw(baseUrl: string, procedure: string, query: string, headers: Record<string, string> = {}): Promise<Outcome> {
  const res = await fetch(`${baseUrl}/${procedure}?${query}`, { headers });
  return connectAnswer(res);
}

async function connectAnswer(res: Response): Promise<Outcome> {
  const text = Buffer.from(await res.arrayBuffer());
  if (res.status === 200) return { code: "ok", message: "" };
  try {
    const body = JSON.parse(text.toString("utf8")) as { code?: unknown; message?: unknown };
    if (typeof body.code === "string") return { code: body.code, message: typeof body.message === "string" ? body.message : "" };
  } catch {
    // not a Connect error body: reported below
  }
  return { code: `http ${res.status} (no Connect error body)`, message: text.toString("utf8").slice(0, 200) };
}

/** One gRPC length-prefixed message: flag byte, 4-byte big-endian length, payload. */
export function grpcFrame(payload: Uint8Array, opts: { compressed?: boolean; declaredLength?: number } = {}): Buffer {
  const head = Buffer.alloc(5);
  head[0] = opts.compressed ? 1 : 0;
  head.writeUInt32BE(opts.declaredLength ?? payload.length, 1);
  return Buffer.concat([head, payload]);
}

const GRPC_CODES: Record<string, string> = Object.fromEntries(
  Object.values(Code)
    .filter((c): c is Code => typeof c === "number")
    .map((c) => [String(c), codeName(c)]),
);
GRPC_CODES["0"] = "ok";

/**
 * gRPC over a raw HTTP/2 stream, for frames no client library would send: the body is
 * written as given (any number of chunks) and the answer is read from grpc-status.
 */
export class RawGrpc {
  private session: http2.ClientHttp2Session | undefined;

  constructor(private readonly baseUrl: string) {}

  private connect(): http2.ClientHttp2Session {
    if (!this.session || this.session.closed || this.session.destroyed) {
      const session = http2.connect(this.baseUrl);
      session.on("error", () => undefined);
      this.session = session;
    }
    return this.session;
  }

  call(procedure: string, chunks: Buffer[], headers: Record<string, string> = {}, timeoutMs = 15_000): Promise<Outcome> {
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
      let status: string | undefined;
      let message = "";
      const read = (h: http2.IncomingHttpHeaders) => {
        if (h["grpc-status"] !== undefined) {
          status = String(h["grpc-status"]);
          message = decodeURIComponent(String(h["grpc-message"] ?? ""));
        }
      };
      let httpStatus = 0;
      req.on("response", (h) => {
        httpStatus = Number(h[":status"]);
        read(h);
      });
      req.on("trailers", read);
      req.on("data", () => undefined);
      req.on("error", (err) => finish({ code: `stream error: ${err.message}`, message: "" }));
      req.on("close", () => {
        if (status !== undefined) finish({ code: GRPC_CODES[status] ?? `grpc-status ${status}`, message });
        else finish({ code: `http ${httpStatus} without grpc-status`, message: "" });
      });
      for (const c of chunks) req.write(c);
      req.end();
    });
  }

  close() {
    this.session?.close();
  }
}
