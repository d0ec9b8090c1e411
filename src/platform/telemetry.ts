import { randomUUID } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { principalKey, requestIdKey } from "./context.js";
import { toConnectError } from "./errors.js";
import type { Logger } from "./logger.js";
import type { Metrics } from "./metrics.js";

const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * The outermost interceptor: gives the request its id (echoed as `x-request-id`), maps
 * whatever the inner layers throw through the one error mapper, and logs and counts
 * the outcome. It never logs headers or message bodies, so no secret reaches the log.
 */
export function createTelemetryInterceptor(logger: Logger, metrics: Metrics): Interceptor {
  return (next) => async (req) => {
    const start = process.hrtime.bigint();
    const given = req.header.get("x-request-id");
    const requestId = given && SANE_REQUEST_ID.test(given) ? given : randomUUID();
    req.contextValues.set(requestIdKey, requestId);
    const procedure = `${req.service.typeName}/${req.method.name}`;
    metrics.inFlight.inc();
    let finished = false;
    const finish = (err: unknown) => {
      if (finished) return;
      finished = true;
      metrics.inFlight.dec();
      let code = "ok";
      let mapped: ConnectError | undefined;
      if (err !== undefined) {
        const { error, internal } = toConnectError(err, requestId);
        mapped = error;
        code = Code[error.code];
        if (internal) logger.error({ requestId, procedure, err }, "internal error");
      }
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      metrics.requests.inc({ procedure, code });
      metrics.latency.observe({ procedure }, seconds);
      const principal = req.contextValues.get(principalKey);
      logger.info(
        {
          requestId,
          procedure,
          protocol: protocolOf(req.header.get("content-type"), req.requestMethod),
          code,
          ms: Math.round(seconds * 1e4) / 10,
          tenant: principal.kind === "tenant" ? principal.tenantId : principal.kind,
        },
        "rpc",
      );
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
      return {
        ...res,
        message: (async function* () {
          try {
            yield* messages;
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
function protocolOf(contentType: string | null, method: string): string {
  if (contentType?.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType?.startsWith("application/grpc")) return "grpc";
  return method === "GET" ? "connect-get" : "connect";
}
