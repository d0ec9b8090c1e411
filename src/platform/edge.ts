import type http2 from "node:http2";
import type { DescMethod, JsonReadOptions } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createConnectRouter,
  type ConnectRouter,
  type ContextValues,
  type Interceptor,
} from "@connectrpc/connect";
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import {
  compressedFlag,
  createAsyncIterable,
  encodeEnvelope,
  type Compression,
  type UniversalHandler,
  type UniversalServerRequest,
  type UniversalServerResponse,
} from "@connectrpc/connect/protocol";
import { codeToHttpStatus, errorFromJsonBytes, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { ErrorInfoSchema } from "../../gen/ts/google/rpc/error_details_pb.js";
import { connectError, isHangUp, protocolError } from "./errors.js";
import { decodePercent, encodeGrpcMessage } from "./grpc-message.js";
import type { Logger } from "./logger.js";
import type { Metrics } from "./metrics.js";
import { logContextKey, protocolOf, recordRpc, requestIdOf, type RpcTracer } from "./telemetry.js";

type NodeServerRequest = Parameters<typeof universalRequestFromNodeRequest>[0];
type NodeServerResponse = Parameters<typeof universalResponseToNodeResponse>[1];

export interface EdgeOptions {
  routes: (router: ConnectRouter) => void;
  interceptors: Interceptor[];
  acceptCompression: Compression[];
  readMaxBytes: number;
  shutdownSignal: AbortSignal;
  contextValues: (req: NodeServerRequest) => ContextValues;
  /**
   * Connect GET reads whose answers any cache may keep, with their max-age in seconds; every other GET answer is
   * `no-store`.
   */
  publicReads: ReadonlyMap<DescMethod, number>;
  logger: Logger;
  metrics: Metrics;
  /** With tracing on: refusals get their span too. */
  tracer?: RpcTracer;
  /** Streams served by callbacks over gRPC (lean-stream.ts); what they do not take goes to connect-es. */
  leanStreams?: {
    requestPath: string;
    handle(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): boolean;
  }[];
}

/**
 * Requests are decoded strictly: JSON naming a field the message does not have is
 * refused (protobuf's JSON rule; connect-es ignores such keys by default), and so is a
 * JSON body that is not UTF-8. Binary unknown fields stay accepted (protobuf's forward
 * compatibility).
 */
const JSON_OPTIONS: Partial<JsonReadOptions> & { textDecoder: { decode(input?: Uint8Array): string } } = {
  ignoreUnknownFields: false,
  textDecoder: new TextDecoder("utf-8", { fatal: true }),
};

const GRPC_WEB_TEXT = /^application\/grpc-web-text(\+proto)?$/i;
const DETAILS_BIN = "grpc-status-details-bin";

/**
 * The protocol edge: connect-node's adapter (connectNodeAdapter, rebuilt here from the
 * same public pieces) plus what it leaves to the server. Each answer is settled here:
 * - a request connect-es refuses before any interceptor runs (undecodable, too large,
 *   no message) gets the mapper's code and ErrorInfo (`protocolError`), an `rpc` log
 *   line and its metric, like any other call;
 * - `grpc-message` is percent-encoded as the gRPC spec says (only bytes outside
 *   0x20–0x7E and "%"), so grpc-js, grpcio and grpcurl print it as it was written;
 * - `application/grpc-web-text` (grpc-web's default mode) is translated to and from
 *   binary gRPC-Web, which connect-es alone answers with 415;
 * - Connect GET answers carry Cache-Control (public reads cacheable, the rest no-store);
 * - a request without a Host is refused with 400 instead of throwing out of the server.
 * Successful unary Connect calls pass through with one status check.
 */
export function createEdgeHandler(opts: EdgeOptions): (req: NodeServerRequest, res: NodeServerResponse) => void {
  const router = createConnectRouter({
    interceptors: opts.interceptors,
    acceptCompression: opts.acceptCompression,
    readMaxBytes: opts.readMaxBytes,
    shutdownSignal: opts.shutdownSignal,
    jsonOptions: JSON_OPTIONS,
  });
  opts.routes(router);
  const handlers = new Map<string, UniversalHandler>();
  for (const h of router.handlers) handlers.set(h.requestPath, h);
  const lean = new Map<string, (req: NodeServerRequest, res: NodeServerResponse) => boolean>();
  for (const stream of opts.leanStreams ?? []) {
    lean.set(stream.requestPath, (req, res) =>
      "stream" in req ? stream.handle(req, res as http2.Http2ServerResponse) : false,
    );
  }

  return function edgeHandler(req, res) {
    const path = req.url?.split("?", 2)[0] ?? "";
    if (lean.get(path)?.(req, res)) return;
    const handler = handlers.get(path);
    if (!handler) {
      res.writeHead(404);
      res.end();
      return;
    }
    let uReq: UniversalServerRequest;
    try {
      uReq = universalRequestFromNodeRequest(req, res, undefined, opts.contextValues(req));
    } catch {
      // connect-node throws (out of the server, before this guard) when it finds no authority.
      res.writeHead(400, { "content-type": "text/plain" });
      res.end("bad request: no Host header\n");
      return;
    }
    const call = new EdgeCall(opts, handler, uReq);
    const refusal = call.refuseUndecodableQuery();
    (refusal ? Promise.resolve(refusal) : handler(call.request).then((uRes) => call.response(uRes)))
      .then((uRes) => universalResponseToNodeResponse(uRes, res))
      .catch((err: unknown) => {
        const ids = uReq.contextValues?.get(logContextKey);
        if (isHangUp(err, uReq.signal)) {
          const line = { ...ids, procedure: call.procedure, err };
          opts.logger.debug(line, "client went away before the answer was written");
          return;
        }
        opts.logger.warn({ ...ids, procedure: call.procedure, err }, "writing an answer failed");
        if (!res.headersSent) {
          res.writeHead(500);
          res.end();
        }
      });
  };
}

/** One request through the edge: its protocol, and how its answer is settled. */
class EdgeCall {
  readonly procedure: string;
  readonly request: UniversalServerRequest;
  private readonly protocol: string;
  private readonly text: boolean;
  private readonly start = process.hrtime.bigint();

  constructor(
    private readonly opts: EdgeOptions,
    private readonly handler: UniversalHandler,
    req: UniversalServerRequest,
  ) {
    this.procedure = `${handler.service.typeName}/${handler.method.name}`;
    const contentType = req.header.get("content-type");
    this.text = contentType !== null && GRPC_WEB_TEXT.test(contentType);
    if (this.text) {
      req.header.set("content-type", "application/grpc-web+proto");
      req = { ...req, body: fromBase64Text(req.body as AsyncIterable<Uint8Array>) };
    }
    this.request = req;
    this.protocol = protocolOf(req.header.get("content-type"), req.method);
  }

  /**
   * A Connect GET whose `message` is not base64 (with `base64=1`): connect-es reports it
   * as INTERNAL (protobuf-es's decoder throws a plain Error), so it is refused here.
   */
  refuseUndecodableQuery(): UniversalServerResponse | undefined {
    if (this.request.method !== "GET") return undefined;
    const query = new URL(this.request.url).searchParams;
    if (query.get("base64") !== "1") return undefined;
    const message = (query.get("message") ?? "").replace(/[=\r\n\t ]/g, "");
    if (/^[A-Za-z0-9+/_-]*$/.test(message) && message.length % 4 !== 1) return undefined;
    const error = this.refused(Code.InvalidArgument, "message: not base64 (the query says base64=1)");
    const body = errorToJsonBytes(error, {});
    const header = new Headers({
      "content-type": "application/json",
      "content-length": String(body.byteLength),
      "cache-control": "no-store",
      "x-request-id": this.requestId,
    });
    return { status: codeToHttpStatus(error.code), header, body: createAsyncIterable([body]) };
  }

  response(res: UniversalServerResponse): UniversalServerResponse | Promise<UniversalServerResponse> {
    switch (this.protocol) {
      case "grpc":
        return this.grpc(res);
      case "grpc-web":
        return this.grpcWeb(res);
      default:
        // The hot path (a Connect POST that succeeded) passes as it is.
        return res.status === 200 && this.request.method !== "GET" ? res : this.connect(res);
    }
  }

  /** Connect: an error without ErrorInfo comes from before the interceptors; GETs get Cache-Control. */
  private async connect(res: UniversalServerResponse): Promise<UniversalServerResponse> {
    if (
      res.status !== 200 &&
      res.body &&
      this.handler.method.methodKind === "unary" &&
      res.header?.get("content-type") === "application/json"
    ) {
      res = await this.connectUnaryError(res);
    }
    if (this.request.method === "GET" && res.header) {
      const maxAge = res.status === 200 ? this.opts.publicReads.get(this.handler.method) : undefined;
      if (maxAge === undefined) {
        res.header.set("cache-control", "no-store");
      } else {
        res.header.set("cache-control", `public, max-age=${maxAge}`);
        res.header.append("vary", "Accept-Encoding");
      }
    }
    return res;
  }

  private async connectUnaryError(res: UniversalServerResponse): Promise<UniversalServerResponse> {
    const header = res.header!;
    const chunks: Uint8Array[] = [];
    for await (const chunk of res.body!) chunks.push(chunk);
    let bytes: Uint8Array = Buffer.concat(chunks);
    const keep = { ...res, body: createAsyncIterable([bytes]) };
    const encoding = header.get("content-encoding");
    if (encoding !== null) {
      const compression = this.opts.acceptCompression.find((c) => c.name === encoding);
      if (!compression) return keep;
      bytes = await compression.decompress(bytes, Number.MAX_SAFE_INTEGER);
    }
    const wire = errorFromJsonBytes(bytes, undefined, new ConnectError("", Code.Unknown));
    if (wire.details.some((d) => "type" in d && d.type === ErrorInfoSchema.typeName)) return keep;
    const error = this.refused(wire.code, wire.rawMessage);
    const body = errorToJsonBytes(error, {});
    header.delete("content-encoding");
    header.set("content-length", String(body.byteLength));
    header.set("x-request-id", this.requestId);
    return { ...res, status: codeToHttpStatus(error.code), body: createAsyncIterable([body]) };
  }

  /** gRPC: trailers settled when connect-node reads them, after the body (a getter: no work per message). */
  private grpc(res: UniversalServerResponse): UniversalServerResponse {
    const trailer = res.trailer;
    if (!trailer) return res;
    // Refused before the body: the request id can still go out in the headers.
    if (this.settleStatus(trailer)) res.header?.set("x-request-id", this.requestId);
    const settle = () => this.settleStatus(trailer);
    return {
      status: res.status,
      header: res.header,
      body: res.body,
      get trailer() {
        settle();
        return trailer;
      },
    };
  }

  /**
   * gRPC-Web: the trailers are the body's last frame; grpc-web-text answers are base64, each frame on its own (the
   * spec's in-stream padding).
   */
  private grpcWeb(res: UniversalServerResponse): UniversalServerResponse {
    if (!res.body) return res;
    if (this.text) res.header?.set("content-type", "application/grpc-web-text+proto");
    const body = res.body;
    const self = this;
    return {
      ...res,
      body: (async function* () {
        for await (let frame of body) {
          if (frame.byteLength > 0 && (frame[0] & trailerFlag) === trailerFlag) {
            frame = await self.grpcWebTrailer(frame, res.header);
          }
          yield self.text
            ? Buffer.from(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength).toString("base64"), "latin1")
            : frame;
        }
      })(),
    };
  }

  private async grpcWebTrailer(frame: Uint8Array, header: Headers | undefined): Promise<Uint8Array> {
    let data = frame.subarray(5);
    if ((frame[0] & compressedFlag) === compressedFlag) {
      const compression = this.opts.acceptCompression.find((c) => c.name === header?.get("grpc-encoding"));
      if (!compression) return frame;
      data = await compression.decompress(data, Number.MAX_SAFE_INTEGER);
    }
    const trailer = trailerParse(data);
    if (this.settleStatus(trailer)) header?.set("x-request-id", this.requestId);
    return encodeEnvelope(trailerFlag, trailerSerialize(trailer));
  }

  /**
   * Gives a gRPC status without details (connect's refusal, before the interceptors) its
   * mapped code and ErrorInfo, and writes grpc-message as the spec says. Idempotent;
   * true when it settled a refusal.
   */
  private settleStatus(trailer: Headers): boolean {
    const status = trailer.get("grpc-status");
    if (status === null || status === "0") return false;
    let refused = false;
    if (!trailer.has(DETAILS_BIN)) {
      const wire = findTrailerError(trailer);
      if (wire) {
        trailer.delete("grpc-message");
        setTrailerStatus(trailer, this.refused(wire.code, wire.rawMessage));
        refused = true;
      }
    }
    const message = trailer.get("grpc-message");
    if (message !== null) trailer.set("grpc-message", encodeGrpcMessage(decodePercent(message)));
    return refused;
  }

  private requestIdValue: string | undefined;
  private get requestId(): string {
    this.requestIdValue ??= requestIdOf(this.request.header.get("x-request-id"));
    return this.requestIdValue;
  }

  /** The mapped form of a refusal no interceptor saw, counted and logged as every call is. */
  private refused(code: Code, message: string): ConnectError {
    const seconds = Number(process.hrtime.bigint() - this.start) / 1e9;
    const span = this.opts.tracer?.start(this.procedure, this.request.header, Date.now() - seconds * 1e3);
    let error = protocolError(new ConnectError(message, code));
    if (error.code === Code.Internal || error.code === Code.Unknown) {
      // Not a request connect could not decode: a failure of ours (an answer that did not serialize).
      const ids = { requestId: this.requestId, traceId: span?.traceId, spanId: span?.spanId };
      this.opts.logger.error({ ...ids, procedure: this.procedure, err: error }, "internal error");
      error = connectError(Code.Internal, "INTERNAL", `internal error (request id ${this.requestId})`, {
        request_id: this.requestId,
      });
    }
    span?.end({ requestId: this.requestId, protocol: this.protocol, code: error.code, tenant: "unknown" });
    recordRpc(this.opts.logger, this.opts.metrics, {
      requestId: this.requestId,
      procedure: this.procedure,
      protocol: this.protocol,
      code: error.code,
      seconds,
      tenant: "unknown",
      traceId: span?.traceId,
      spanId: span?.spanId,
    });
    return error;
  }
}

const BASE64_SEGMENT = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * A grpc-web-text request body (base64, in any chunking, possibly padded segments one
 * after another) as bytes. Hand-written: Node's decoder stops at the first padding and
 * skips characters that are not base64 instead of refusing them.
 */
async function* fromBase64Text(body: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  let pending = "";
  for await (const chunk of body) {
    pending += Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
      .toString("latin1")
      .replace(/[\r\n\t ]/g, "");
    const whole = pending.length - (pending.length % 4);
    if (whole === 0) continue;
    yield decodeBase64Groups(pending.slice(0, whole));
    pending = pending.slice(whole);
  }
  if (pending.length > 0)
    throw new ConnectError(
      "protocol error: the grpc-web-text body is not base64 (length not a multiple of 4)",
      Code.InvalidArgument,
    );
}

function decodeBase64Groups(text: string): Uint8Array {
  const parts: Buffer[] = [];
  let from = 0;
  // A group with padding ends a segment; the next segment starts after it.
  for (let pad = text.indexOf("="); pad !== -1; pad = text.indexOf("=", from)) {
    const end = pad + 4 - (pad % 4);
    parts.push(decodeBase64Segment(text.slice(from, end)));
    from = end;
  }
  parts.push(decodeBase64Segment(text.slice(from)));
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

function decodeBase64Segment(segment: string): Buffer {
  if (!BASE64_SEGMENT.test(segment))
    throw new ConnectError("protocol error: the grpc-web-text body is not base64", Code.InvalidArgument);
  return Buffer.from(segment, "base64");
}
