import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Context,
  type Span,
  type TextMapGetter,
} from "@opentelemetry/api";
import type { PgInstrumentation } from "@opentelemetry/instrumentation-pg";
import type { SpanProcessor } from "@opentelemetry/sdk-trace";
import { codeName } from "./errors.js";
import type { RpcSpan, RpcTracer, RpcSpanEnd } from "./telemetry.js";

/**
 * OpenTelemetry, loaded only when tracing is on (app.ts imports this module dynamically,
 * so a licensd without OTEL_* settings never loads the SDK). The SDK reads the standard
 * OTEL_* variables itself: exporter, endpoint, protocol, headers, sampler, resource.
 */
export interface TracingOptions {
  /** Instead of the exporters OTEL_* names (tests pass an in-memory exporter's processor). */
  spanProcessors?: SpanProcessor[];
}

export interface Tracing {
  tracer: RpcTracer;
  /** Exports what is buffered and stops the SDK. */
  shutdown(): Promise<void>;
}

/** Starts the SDK (W3C trace context, PostgreSQL spans) and registers it as OpenTelemetry's global. */
export async function startTracing(env: NodeJS.ProcessEnv, opts: TracingOptions = {}): Promise<Tracing> {
  const [{ NodeSDK }, { PgInstrumentation }] = await Promise.all([
    import("@opentelemetry/sdk-node"),
    import("@opentelemetry/instrumentation-pg"),
  ]);
  // Only spans that belong to a request: the workers' and the audit feed's queries would each be a trace of one span.
  const pg = new PgInstrumentation({
    requireParentSpan: true,
    // MikroORM inlines its parameters into the SQL: names, emails, digests would leave in every span.
    requestHook: (span, { query }) => span.setAttribute("db.query.text", sqlWithoutLiterals(query.text)),
  });
  const named =
    env.OTEL_SERVICE_NAME !== undefined || /(^|,)\s*service\.name\s*=/.test(env.OTEL_RESOURCE_ATTRIBUTES ?? "");
  const sdk = new NodeSDK({
    serviceName: named ? undefined : "licensd",
    instrumentations: [pg],
    spanProcessors: opts.spanProcessors,
    // Traces only: logs stay pino's JSON lines, metrics stay Prometheus' /metrics.
    logRecordProcessors: [],
    metricReaders: [],
  });
  sdk.start();
  patchLoaded(pg);
  const tracer = trace.getTracer("licensd");
  return {
    tracer: {
      start: (procedure, header, startTime) =>
        startRpcSpan(tracer.startSpan.bind(tracer), procedure, header, startTime),
    },
    shutdown: () => sdk.shutdown(),
  };
}

/**
 * The instrumentation patches `pg` through require hooks, when it is loaded. Here `pg` is
 * loaded before (ESM imports are all resolved before app.ts runs: MikroORM's driver
 * imports it), so its modules, already in the require cache, are patched in place; the
 * hooks still cover any later load. Patched prototypes reach every Client and Pool.
 */
function patchLoaded(instrumentation: PgInstrumentation) {
  const require = createRequire(import.meta.url);
  const pgMain = require.resolve("pg");
  const fromPg = createRequire(pgMain);
  for (const def of instrumentation.getModuleDefinitions()) {
    const file = (def.name === "pg" ? require : fromPg).resolve(def.name);
    const loaded = require.cache[file];
    if (!loaded?.loaded || !def.patch) continue;
    def.patch(loaded.exports, packageVersion(file));
  }
}

function packageVersion(file: string): string | undefined {
  for (let dir = path.dirname(file); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    try {
      return (JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as { version?: string }).version;
    } catch {
      // not a package root: go up
    }
  }
  return undefined;
}

/**
 * SQL with its string literals (standard, E'…' with escapes, B'…'/X'…' bit strings) replaced
 * by `?`, as OpenTelemetry asks of db.query.text; quoted identifiers are kept as they are.
 */
export const sqlWithoutLiterals = (sql: string): string =>
  sql.replace(/"(?:[^"]|"")*"|(?:\b[Ee])'(?:[^'\\]|''|\\.)*'|(?:\b[BbXx])?'(?:[^']|'')*'/g, (m) =>
    m[0] === '"' ? m : "?",
  );

const headerGetter: TextMapGetter<Headers> = {
  keys: (carrier) => [...carrier.keys()],
  get: (carrier, key) => carrier.get(key) ?? undefined,
};

/**
 * The span of one RPC, named by its procedure (`licensd.licensing.v1.LicensingService/ValidateLicense`)
 * with OpenTelemetry's RPC attributes; a `traceparent` header continues the caller's trace.
 */
function startRpcSpan(
  startSpan: (name: string, options: object, ctx: Context) => Span,
  procedure: string,
  header: Headers,
  startTime?: number,
): RpcSpan {
  const parent = propagation.extract(ROOT_CONTEXT, header, headerGetter);
  const slash = procedure.lastIndexOf("/");
  const span = startSpan(
    procedure,
    {
      kind: SpanKind.SERVER,
      startTime,
      attributes: { "rpc.service": procedure.slice(0, slash), "rpc.method": procedure.slice(slash + 1) },
    },
    parent,
  );
  const active = trace.setSpan(parent, span);
  const { traceId, spanId } = span.spanContext();
  return {
    traceId,
    spanId,
    run: (fn) => context.with(active, fn),
    end(o: RpcSpanEnd) {
      const grpc = o.protocol === "grpc" || o.protocol === "grpc-web";
      const code = codeName(o.code);
      span.setAttributes({
        "rpc.system": grpc ? "grpc" : "connect_rpc",
        "licensd.protocol": o.protocol,
        "licensd.code": code,
        "licensd.tenant": o.tenant,
        "licensd.request_id": o.requestId,
      });
      if (grpc)
        span.setAttribute("rpc.grpc.status_code", o.code ?? 0); // Connect's codes are gRPC's numbers
      else if (o.code !== undefined) span.setAttribute("rpc.connect_rpc.error_code", code);
      if (o.code !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: code });
      span.end();
    },
  };
}
