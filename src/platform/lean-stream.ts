import type http2 from "node:http2";
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethodBiDiStreaming,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import { grpcStatusOk, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { decodePercent, encodeGrpcMessage } from "./grpc-message.js";
import { logContext, type Logger } from "./logger.js";
import type { Metrics } from "./metrics.js";
import { endRpc, requestIdOf, type RpcCall } from "./telemetry.js";

/** One call on the lean path, as its session sees it. */
export interface LeanCall<O extends DescMessage> {
  /** The client's address (for its key-failure budget). */
  readonly address: string;
  /** Sends one message (the response headers go before the first). */
  send(message: MessageInitShape<O>): void;
  /** Ends the call: OK without `err`, else with `err` as the error mapper maps it. Later calls do nothing. */
  end(err?: unknown): void;
}

/** What serves one call: each request message in order (the next waits for the last), then `close` once. */
export interface LeanSession<I extends DescMessage> {
  message(message: MessageShape<I>): Promise<void> | void;
  /** The call is over (ended by the session, the client, an error or the server's shutdown): stop, quietly. */
  close(): void;
}

export interface LeanStreamOptions<I extends DescMessage, O extends DescMessage> {
  method: DescMethodBiDiStreaming<I, O>;
  open(call: LeanCall<O>): LeanSession<I>;
  /** The validation interceptor's check (validation.ts), made of each request message. */
  check(schema: DescMessage, message: MessageShape<I>): void;
  readMaxBytes: number;
  shutdownSignal: AbortSignal;
  address(req: http2.Http2ServerRequest): string;
  logger: Logger;
  metrics: Metrics;
}

const GRPC_PROTO = /^application\/grpc(\+proto)?$/i;
const HEADER = 5;
const EMPTY = Buffer.alloc(0);

/**
 * A bidi-streaming method served over gRPC (binary, uncompressed, HTTP/2) by callbacks,
 * for streams held open by the thousand for days (ConnectLease). connect-es 2.2 ships
 * its async generators compiled down to ES2017 (tslib's __asyncGenerator: a dozen
 * closures and a promise queue each), ten of them per stream, and each interceptor adds
 * its own: about 60 KiB of heap per idle stream (BENCHMARKS.md, "Memory"). An idle stream
 * here holds Node's HTTP/2 stream, a frame reader and the session's own state.
 *
 * It keeps every promise the connect-es path makes, through the same code where it can:
 * the interceptors' work is done by the functions they use (the validation check, the
 * telemetry's `endRpc`: one `rpc` line, metrics, the one error mapper, x-request-id),
 * errors are written as connect-es writes gRPC trailers (`setTrailerStatus`, with their
 * details), and frame errors are worded as connect-es words them, so errors.ts maps them
 * alike. A client that leaves is CANCELED; the server's shutdown ends streams cleanly.
 * What it does not serve it leaves to connect-es (`handle` answers false): other content
 * types and protocols, compressed requests, a grpc-timeout, an Authorization header
 * (the auth interceptor's to judge), HTTP/1.1. Written by hand for want of a package: no
 * maintained library serves one RPC over Node's HTTP/2 streams beside connect-es.
 */
export function createLeanStream<I extends DescMessage, O extends DescMessage>(opts: LeanStreamOptions<I, O>) {
  const { method, readMaxBytes, logger, metrics } = opts;
  const procedure = `${method.parent.typeName}/${method.name}`;
  /** Calls open now, ended cleanly when the server shuts down (as connect-es ends streams then). */
  const live = new Set<() => void>();
  opts.shutdownSignal.addEventListener("abort", () => {
    for (const stop of [...live]) stop();
  });

  function handle(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): boolean {
    const h = req.headers;
    if (req.method !== "POST" || !GRPC_PROTO.test(h["content-type"] ?? "")) return false;
    if (h["grpc-encoding"] !== undefined && h["grpc-encoding"] !== "identity") return false;
    if (h["grpc-timeout"] !== undefined || h.authorization !== undefined) return false;
    if (opts.shutdownSignal.aborted) return false;

    const requestId = requestIdOf((h["x-request-id"] as string | undefined) ?? null);
    const rpc: RpcCall = {
      log: { requestId },
      procedure,
      protocol: "grpc",
      start: process.hrtime.bigint(),
      tenant: "anonymous",
    };
    metrics.inFlight.inc();
    let headersSent = false;
    let ended = false;
    const call: LeanCall<O> = {
      address: opts.address(req),
      send(message) {
        if (ended || res.destroyed) return;
        // connect's envelope is a buffer of its own: a slice of Node's shared 8 KiB pool would keep the whole pool
        // alive while the stream is.
        const frame = encodeEnvelope(0, toBinary(method.output, create(method.output, message)));
        if (!headersSent) {
          headersSent = true;
          res.writeHead(200, { "content-type": "application/grpc+proto", "x-request-id": requestId });
        }
        res.write(frame);
      },
      end(err) {
        if (ended) return;
        ended = true;
        live.delete(stop);
        session?.close();
        const mapped = endRpc(logger, metrics, rpc, err);
        if (res.destroyed) return;
        const trailer = new Headers({ "grpc-status": grpcStatusOk });
        if (mapped) {
          setTrailerStatus(trailer, mapped);
          trailer.set("grpc-message", encodeGrpcMessage(decodePercent(trailer.get("grpc-message") ?? "")));
        }
        if (!headersSent) {
          // Trailers-only: the status goes in the one HEADERS frame.
          headersSent = true;
          res.writeHead(200, {
            "content-type": "application/grpc+proto",
            "x-request-id": requestId,
            ...Object.fromEntries(trailer),
          });
        } else {
          res.addTrailers(Object.fromEntries(trailer));
        }
        res.end();
      },
    };
    const stop = () => call.end();
    live.add(stop);
    let session: LeanSession<I> | undefined;
    session = logContext.run(rpc.log, () => opts.open(call));

    // Messages one at a time: the body is paused while one is being served.
    const reader = new FrameReader(readMaxBytes);
    let serving: Promise<void> = Promise.resolve();
    let pending = 0;
    const serve = (message: MessageShape<I>) => {
      pending++;
      req.pause();
      serving = serving
        .then(() => (ended ? undefined : logContext.run(rpc.log, () => session?.message(message))))
        .then(
          () => {
            if (--pending === 0 && !ended) req.resume();
          },
          (err: unknown) => call.end(err),
        );
    };
    req.on("data", (chunk: Buffer) => {
      if (ended) return;
      try {
        reader.push(chunk);
        for (let data = reader.next(); data; data = reader.next()) {
          const message = decode(method.input, data);
          opts.check(method.input, message);
          serve(message);
        }
      } catch (err) {
        call.end(err);
      }
    });
    // The client ended its side: the stream ends once what it sent is served.
    req.on("end", () => {
      serving = serving.then(() => call.end(reader.leftover()));
    });
    // The client reset the stream, or the connection went: it left.
    res.on("close", () => call.end(new ConnectError("the client went away", Code.Canceled)));
    req.on("error", () => undefined);
    return true;
  }

  return { requestPath: `/${procedure}`, handle };
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

  /** At the body's end: the error of a frame left incomplete, if one is. */
  leftover(): ConnectError | undefined {
    return this.buffered.length > 0
      ? new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument)
      : undefined;
  }

  /** Waiting for more: what is left is copied out of the chunk it came in (a stream may wait for days). */
  private keep(): undefined {
    this.buffered = this.buffered.length === 0 ? EMPTY : Buffer.from(this.buffered);
    return undefined;
  }
}
