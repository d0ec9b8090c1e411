import { randomUUID } from "node:crypto";
import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import { principalKey, requestIdKey } from "./context.js";
import { codeName, isHangUp, toConnectError } from "./errors.js";
import { logContext, type LogContext, type Logger } from "./logger.js";
import type { Metrics } from "./metrics.js";

/** The call's LogContext, for lines the edge logs after the call (writing its answer). */
export const logContextKey = createContextKey<LogContext | undefined>(undefined, {
  description: "licensd log context",
});

const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The caller's `x-request-id` when sane, else a fresh one. */
export const requestIdOf = (given: string | null): string =>
  given && SANE_REQUEST_ID.test(given) ? given : randomUUID();

/**
 * Tracing is on when OpenTelemetry's standard variables name where traces go (an OTLP
 * endpoint, or a traces exporter other than `none`) and OTEL_SDK_DISABLED is not `true`.
 */
export function tracingConfigured(env: NodeJS.ProcessEnv): boolean {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true") return false;
  const exporter = env.OTEL_TRACES_EXPORTER?.trim().toLowerCase();
  if (exporter === "none") return false;
  return Boolean(exporter || env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

/** Starts RPC spans; given only when tracing is on (tracing.ts implements it). */
export interface RpcTracer {
  /** The span of one call, continuing the trace a `traceparent` header names; `startTime` in ms since the epoch. */
  start(procedure: string, header: Headers, startTime?: number): RpcSpan;
}

export interface RpcSpan {
  traceId: string;
  spanId: string;
  /** Runs `fn` with this span as the active one, so the spans it starts (PostgreSQL's) are its children. */
  run<T>(fn: () => T): T;
  end(outcome: RpcSpanEnd): void;
}

export type RpcSpanEnd = Pick<RpcOutcome, "requestId" | "protocol" | "code" | "tenant">;

/** One RPC's outcome, as the `rpc` log line and the metrics record it. */
export interface RpcOutcome {
  requestId: string;
  procedure: string;
  protocol: string;
  /** undefined: OK. */
  code: Code | undefined;
  seconds: number;
  tenant: string;
  /** With tracing on. */
  traceId?: string;
  spanId?: string;
}

/** Counts an RPC and writes its `rpc` log line; codes are spelt as Connect's wire names (`ok`, `invalid_argument`). */
export function recordRpc(logger: Logger, metrics: Metrics, o: RpcOutcome) {
  const code = codeName(o.code);
  metrics.requests.inc({ procedure: o.procedure, code });
  metrics.latency.observe({ procedure: o.procedure }, o.seconds);
  const ms = Math.round(o.seconds * 1e4) / 10;
  const { requestId, traceId, spanId, procedure, protocol, tenant } = o;
  logger.info({ requestId, traceId, spanId, procedure, protocol, code, ms, tenant }, "rpc");
}

/**
 * The outermost interceptor: gives the request its id (echoed as `x-request-id`), maps
 * whatever the inner layers throw through the one error mapper, and logs and counts
 * the outcome. It never logs headers or message bodies, so no secret reaches the log.
 * A stream that ends because its deadline passed ends with DEADLINE_EXCEEDED (one whose
 * client left: CANCELED), never OK: implementations stop on the call's signal, this says
 * why. The server's shutdown (`shuttingDown`) ends streams cleanly.
 *
 * The call (and each message of a streamed answer) runs inside its LogContext, so every
 * line logged meanwhile carries the request id; with a tracer, inside its span too, which
 * covers the whole call, a stream until its end.
 */
export function createTelemetryInterceptor(logger: Logger, metrics: Metrics, tracer?: RpcTracer): Interceptor {
  return (next) => async (req) => {
    const start = process.hrtime.bigint();
    const requestId = requestIdOf(req.header.get("x-request-id"));
    req.contextValues.set(requestIdKey, requestId);
    const procedure = `${req.service.typeName}/${req.method.name}`;
    const protocol = protocolOf(req.header.get("content-type"), req.requestMethod);
    const span = tracer?.start(procedure, req.header);
    const log = span ? { requestId, traceId: span.traceId, spanId: span.spanId } : { requestId };
    req.contextValues.set(logContextKey, log);
    const inContext = <T>(fn: () => T): T => logContext.run(log, span ? () => span.run(fn) : fn);
    metrics.inFlight.inc();
    let finished = false;
    const finish = (err: unknown) => {
      if (finished) return;
      finished = true;
      const principal = req.contextValues.get(principalKey);
      const tenant = principal.kind === "tenant" ? principal.tenantId : principal.kind;
      return endRpc(logger, metrics, { log, procedure, protocol, start, tenant, span }, err, req.signal);
    };
    try {
      const res = await inContext(() => next(req));
      res.header.set("x-request-id", requestId);
      if (!res.stream) {
        finish(undefined);
        return res;
      }
      const messages = res.message[Symbol.asyncIterator]();
      const signal = req.signal;
      return {
        ...res,
        message: (async function* () {
          let open = true;
          try {
            // The implementation's generator runs when its messages are pulled: here, in the call's context.
            for (let r = await inContext(() => messages.next()); !r.done; r = await inContext(() => messages.next())) {
              yield r.value;
            }
            open = false;
            if (signal.aborted) {
              // Ended because its deadline passed or its client left, not because it was done.
              const reason: unknown = signal.reason;
              if ((reason instanceof ConnectError && reason.code === Code.DeadlineExceeded) || isHangUp(reason, signal))
                throw reason;
            }
            finish(undefined);
          } catch (err) {
            open = false;
            throw finish(err) ?? err;
          } finally {
            // A consumer that stops early ends the implementation's generator too (what yield* did).
            if (open) await inContext(async () => messages.return?.());
            finish(undefined);
          }
        })(),
      };
    } catch (err) {
      const mapped = finish(err)!;
      mapped.metadata.set("x-request-id", requestId);
      throw mapped;
    }
  };
}

/** What ending a call needs to say about it. */
export interface RpcCall {
  log: LogContext & { requestId: string };
  procedure: string;
  protocol: string;
  /** process.hrtime.bigint() when it began. */
  start: bigint;
  tenant: string;
  span?: RpcSpan;
}

/**
 * Ends a call begun with `metrics.inFlight.inc()`: maps what it failed with (if anything) through the one error
 * mapper, logs an internal error or an outage once, ends its span and records its `rpc` line and metrics. Returns
 * the error as the client gets it.
 */
export function endRpc(
  logger: Logger,
  metrics: Metrics,
  call: RpcCall,
  err: unknown,
  signal?: AbortSignal,
): ConnectError | undefined {
  const { log, procedure, protocol, tenant, span } = call;
  const { requestId } = log;
  metrics.inFlight.dec();
  let mapped: ConnectError | undefined;
  if (err !== undefined) {
    const { error, internal, databaseDown } = toConnectError(err, requestId, signal);
    mapped = error;
    if (internal) logger.error({ ...log, procedure, err }, "internal error");
    // During a failover or an outage every call says so: one line each, the driver's message, no stack.
    else if (databaseDown)
      logger.warn({ ...log, procedure, cause: (err as Error)?.message }, "database unavailable: answered UNAVAILABLE");
  }
  span?.end({ requestId, protocol, code: mapped?.code, tenant });
  recordRpc(logger, metrics, {
    requestId,
    procedure,
    protocol,
    code: mapped?.code,
    seconds: Number(process.hrtime.bigint() - call.start) / 1e9,
    tenant,
    traceId: span?.traceId,
    spanId: span?.spanId,
  });
  return mapped;
}

/** grpc, grpc-web or connect, from the request's content type (Connect GETs have none). */
export function protocolOf(contentType: string | null, method: string): string {
  if (contentType?.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType?.startsWith("application/grpc")) return "grpc";
  return method === "GET" ? "connect-get" : "connect";
}
