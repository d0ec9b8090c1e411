import type http2 from "node:http2";
import {
  create,
  fromBinary,
  isMessage,
  toBinary,
  type DescMessage,
  type DescMethodBiDiStreaming,
  type Message,
  type MessageShape,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createHandlerContext,
  type ContextValues,
  type HandlerContext,
  type Interceptor,
  type StreamRequest,
  type StreamResponse,
} from "@connectrpc/connect";
import { grpcStatusOk, parseTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { decodePercent, encodeGrpcMessage } from "./grpc-message.js";

/** A bidi-streaming method's implementation, as connect-es calls it (messages of the method's types). */
// biome-ignore lint/suspicious/noExplicitAny: the method's own message types, checked where the pair is made
export type BidiImpl = (requests: AsyncIterable<any>, ctx: HandlerContext) => AsyncIterable<any>;

type Context = ReturnType<typeof createHandlerContext>;
type Next = (req: StreamRequest) => Promise<StreamResponse>;

export interface LeanStreamOptions {
  method: DescMethodBiDiStreaming;
  impl: BidiImpl;
  interceptors: Interceptor[];
  readMaxBytes: number;
  shutdownSignal: AbortSignal;
  contextValues: (req: http2.Http2ServerRequest) => ContextValues;
}

const GRPC_PROTO = /^application\/grpc(\+proto)?$/i;
const HEADER = 5;
const EMPTY = Buffer.alloc(0);

/**
 * A bidi-streaming method served over gRPC (binary, uncompressed, HTTP/2) without
 * connect-es's streaming pipeline, for streams held open by the thousand for days
 * (ConnectLease). connect-es 2.2 ships its async generators compiled down to ES2017
 * (tslib's __asyncGenerator: a dozen closures and a promise queue each), ten of them
 * per stream: about 60 KiB of heap per idle stream (BENCHMARKS.md, "Memory"). Here a
 * stream holds the HTTP/2 stream, its handler context and the implementation's own
 * generator. Everything above the wire is connect-es's and ours as on every other call:
 * the same interceptors (telemetry, auth, validation) in the same order, connect's
 * handler context (deadline from grpc-timeout, the server's shutdown, the client's
 * hang-up), connect's trailer encoding of errors with their details; only the framing
 * is done here. Written by hand for want of a package: no maintained library serves a
 * connect-es implementation over raw Node HTTP/2 streams.
 *
 * `handle` answers false for what it does not serve (another content type, a compressed
 * request, HTTP/1.1): connect-es's full path serves that as before.
 */
export function createLeanStream(opts: LeanStreamOptions) {
  const { method, readMaxBytes } = opts;
  const service = method.parent;
  const requestPath = `/${service.typeName}/${method.name}`;
  /** The handler context of each call, found from its context values (which interceptors pass along). */
  const contexts = new WeakMap<ContextValues, Context>();
  const invoke = opts.interceptors.reduceRight<Next>(
    (next, interceptor) => interceptor(next as never) as never,
    async (req) => {
      const ctx = contexts.get(req.contextValues)!;
      return {
        stream: true,
        service,
        method,
        header: ctx.responseHeader,
        trailer: ctx.responseTrailer,
        contextValues: req.contextValues,
        message: opts.impl(req.message, ctx),
      };
    },
  );

  function handle(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): boolean {
    if (req.method !== "POST" || !GRPC_PROTO.test(req.headers["content-type"] ?? "")) return false;
    const encoding = req.headers["grpc-encoding"];
    if (encoding !== undefined && encoding !== "identity") return false;
    const timeout = parseTimeout((req.headers["grpc-timeout"] as string | undefined) ?? null, Number.MAX_SAFE_INTEGER);
    if (timeout.error) return false;
    const requestSignal = new AbortController();
    const header = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      if (name.startsWith(":") || value === undefined) continue;
      if (Array.isArray(value)) for (const v of value) header.append(name, v);
      else header.set(name, value);
    }
    const contextValues = opts.contextValues(req);
    const ctx = createHandlerContext({
      service,
      method,
      protocolName: "grpc",
      requestMethod: "POST",
      url: `http://${req.authority}${requestPath}`,
      timeoutMs: timeout.timeoutMs,
      shutdownSignal: opts.shutdownSignal,
      requestSignal: requestSignal.signal,
      requestHeader: header,
      responseHeader: { "content-type": "application/grpc+proto" },
      responseTrailer: { "grpc-status": grpcStatusOk },
      contextValues,
    });
    contexts.set(contextValues, ctx);
    // The client resetting the stream, or the connection going: the call's signal says the client left.
    res.once("close", () => {
      if (!res.writableFinished) requestSignal.abort(new ConnectError("the client went away", Code.Canceled));
    });
    void respond(req, res, ctx, contextValues);
    return true;
  }

  /** Pulls the next answer and writes it; false at the end (or once the client is gone). */
  async function sendNext(messages: AsyncIterator<Message>, res: http2.Http2ServerResponse, sendHeaders: () => void) {
    const r = await messages.next();
    if (r.done || res.destroyed) return false;
    const body = toBinary(method.output, isMessage(r.value, method.output) ? r.value : create(method.output, r.value));
    // Unpooled: a slice of Node's shared 8 KiB pool would keep the whole pool alive while the stream is.
    const frame = Buffer.allocUnsafeSlow(HEADER + body.byteLength);
    frame[0] = 0;
    frame.writeUInt32BE(body.byteLength, 1);
    frame.set(body, HEADER);
    sendHeaders();
    if (!res.write(frame)) await drained(res);
    return true;
  }

  async function respond(
    req: http2.Http2ServerRequest,
    res: http2.Http2ServerResponse,
    ctx: Context,
    contextValues: ContextValues,
  ) {
    let headersSent = false;
    const sendHeaders = () => {
      if (headersSent) return;
      headersSent = true;
      res.writeHead(200, Object.fromEntries(ctx.responseHeader));
    };
    try {
      const response = await invoke({
        stream: true,
        service,
        method,
        requestMethod: "POST",
        url: ctx.url,
        signal: ctx.signal,
        header: ctx.requestHeader,
        contextValues,
        message: frames(req, method.input, readMaxBytes),
      });
      const messages = response.message[Symbol.asyncIterator]();
      // Each message is pulled, encoded and written by `sendNext`, so that nothing of it stays in this frame while
      // the stream waits (for days) for the next.
      while (await sendNext(messages, res, sendHeaders)) {}
    } catch (err) {
      setTrailerStatus(
        ctx.responseTrailer,
        err instanceof ConnectError
          ? err
          : new ConnectError("internal error", Code.Internal, undefined, undefined, err),
      );
    } finally {
      ctx.abort();
    }
    if (res.destroyed) return;
    const trailer = ctx.responseTrailer;
    const message = trailer.get("grpc-message");
    if (message !== null) trailer.set("grpc-message", encodeGrpcMessage(decodePercent(message)));
    if (!headersSent) {
      // Trailers-only: the status goes in the one HEADERS frame.
      headersSent = true;
      res.writeHead(200, { ...Object.fromEntries(ctx.responseHeader), ...Object.fromEntries(trailer) });
      res.end();
      return;
    }
    res.addTrailers(Object.fromEntries(trailer));
    res.end();
  }

  return { requestPath, handle };
}

/**
 * The request's gRPC frames as messages: uncompressed, each at most `readMaxBytes`, the body ending on a frame.
 * Chunks are read by `pull` and parsed by a FrameReader, so no chunk stays referenced from this generator's frame
 * while it waits for the next message.
 */
async function* frames<I extends DescMessage>(
  req: http2.Http2ServerRequest,
  schema: I,
  readMaxBytes: number,
): AsyncGenerator<MessageShape<I>> {
  const reader = new FrameReader(readMaxBytes);
  const chunks = (req as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  for (;;) {
    const data = reader.next();
    if (data) {
      yield decode(schema, data);
      continue;
    }
    if (!(await pull(chunks, reader))) break;
  }
  reader.end();
}

async function pull(chunks: AsyncIterator<Buffer>, reader: FrameReader): Promise<boolean> {
  const r = await chunks.next();
  if (r.done) return false;
  reader.push(r.value);
  return true;
}

function decode<I extends DescMessage>(schema: I, data: Uint8Array): MessageShape<I> {
  try {
    return fromBinary(schema, data);
  } catch (e) {
    throw new ConnectError(`parse binary: ${(e as Error).message}`, Code.Internal);
  }
}

/** gRPC's length-prefixed frames out of a byte stream (errors worded as connect-es words them: errors.ts maps them). */
class FrameReader {
  private buffered: Buffer = EMPTY;
  constructor(private readonly readMaxBytes: number) {}

  push(chunk: Buffer) {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
  }

  /** The next whole frame's message bytes, if one is buffered. */
  next(): Uint8Array | undefined {
    const buffered = this.buffered;
    if (buffered.length < HEADER) return this.keep();
    const length = buffered.readUInt32BE(1);
    if (length > this.readMaxBytes)
      throw new ConnectError(
        `message size ${length} is larger than configured readMaxBytes ${this.readMaxBytes}`,
        Code.ResourceExhausted,
      );
    if (buffered.length < HEADER + length) return this.keep();
    if ((buffered[0] & 0b1) === 1)
      throw new ConnectError("received compressed envelope, but do not know how to decompress", Code.Internal);
    this.buffered = buffered.subarray(HEADER + length);
    return buffered.subarray(HEADER, HEADER + length);
  }

  end() {
    if (this.buffered.length > 0) throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
  }

  /** Waiting for more: what is left is copied out of the chunk it came in (a stream may wait for days). */
  private keep(): undefined {
    this.buffered = this.buffered.length === 0 ? EMPTY : Buffer.from(this.buffered);
    return undefined;
  }
}

function drained(res: http2.Http2ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}
