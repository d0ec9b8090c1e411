import { randomUUID } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { principalKey, requestIdKey } from "./context.js";
import { codeName, isHangUp, toConnectError } from "./errors.js";
import type { Logger } from "./logger.js";
import type { Metrics } from "./metrics.js";

const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The caller's `x-request-id` when sane, else a fresh one. */
export const requestIdOf = (given: string | null): string => (given && SANE_REQUEST_ID.test(given) ? given : randomUUID());

/** One RPC's outcome, as the `rpc` log line and the metrics record it. */
export interface RpcOutcome {
  requestId: string;
  procedure: string;
  protocol: string;
  /** undefined: OK. */
  code: Code | undefined;
  seconds: number;
  tenant: string;
}

/** Counts an RPC and writes its `rpc` log line; codes are spelt as Connect's wire names (`ok`, `invalid_argument`). */
export function recordRpc(logger: Logger, metrics: Metrics, o: RpcOutcome) {
  const code = codeName(o.code);
  metrics.requests.inc({ procedure: o.procedure, code });
  metrics.latency.observe({ procedure: o.procedure }, o.seconds);
  logger.info({ requestId: o.requestId, procedure: o.procedure, protocol: o.protocol, code, ms: Math.round(o.seconds * 1e4) / 10, tenant: o.tenant }, "rpc");
}

/**
 * The outermost interceptor: gives the request its id (echoed as `x-request-id`), maps
 * whatever the inner layers throw through the one error mapper, and logs and counts
 * the outcome. It never logs headers or message bodies, so no secret reaches the log.
 * A stream that ends because its deadline passed ends with DEADLINE_EXCEEDED (one whose
 * client left: CANCELED), never OK: implementations stop on the call's signal, this says
 * why. The server's shutdown (`shuttingDown`) ends streams cleanly.
 */
export function createTelemetryInterceptor(logger: Logger, metrics: Metrics): Interceptor {
  return (next) => async (req) => {
    const start = process.hrtime.bigint();
    const requestId = requestIdOf(req.header.get("x-request-id"));
    req.contextValues.set(requestIdKey, requestId);
    const procedure = `${req.service.typeName}/${req.method.name}`;
    metrics.inFlight.inc();
    let finished = false;
    const finish = (err: unknown) => {
      if (finished) return;
      finished = true;
      metrics.inFlight.dec();
      let mapped: ConnectError | undefined;
      if (err !== undefined) {
        const { error, internal } = toConnectError(err, requestId, req.signal);
        mapped = error;
        if (internal) logger.error({ requestId, procedure, err }, "internal error");
      }
      const principal = req.contextValues.get(principalKey);
      recordRpc(logger, metrics, {
        requestId,
        procedure,
        protocol: protocolOf(req.header.get("content-type"), req.requestMethod),
        code: mapped?.code,
        seconds: Number(process.hrtime.bigint() - start) / 1e9,
        tenant: principal.kind === "tenant" ? principal.tenantId : principal.kind,
      });
      return mapped;
    };
    try {
      const res = await next(req);
      res.header.set("x-request-id", requestId);
      if (!res.stream) {
        finish(undefined);
        return res;
      }
      const messages = res.message;
      const signal = req.signal;
      return {
        ...res,
        message: (async function* () {
          try {
            yield* messages;
            if (signal.aborted) {
              // Ended because its deadline passed or its client left, not because it was done.
              const reason: unknown = signal.reason;
              if ((reason instanceof ConnectError && reason.code === Code.DeadlineExceeded) || isHangUp(reason, signal)) throw reason;
            }
            finish(undefined);
          } catch (err) {
            throw finish(err) ?? err;
          } finally {
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

/** grpc, grpc-web or connect, from the request's content type (Connect GETs have none). */
export function protocolOf(contentType: string | null, method: string): string {
  if (contentType?.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType?.startsWith("application/grpc")) return "grpc";
  return method === "GET" ? "connect-get" : "connect";
}
