import { AsyncLocalStorage } from "node:async_hooks";
import { pino, type DestinationStream, type Logger } from "pino";

export type { Logger };

/** What every log line written while a request is handled carries: its request id, and its trace when tracing is on. */
export interface LogContext {
  requestId: string;
  traceId?: string;
  spanId?: string;
}

/**
 * The handled request's LogContext, entered by the telemetry interceptor around the call
 * (and around each message of a streamed answer). A carrier, like a context key: it holds
 * nothing between requests.
 */
export const logContext = new AsyncLocalStorage<LogContext>();

const NONE = {};

/**
 * JSON logs on stdout. Authorization headers, secrets and keys are redacted by path
 * as a second line of defence; the code never passes them to the logger.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: "licensd", pid: process.pid },
    redact: {
      paths: [
        "authorization",
        "*.authorization",
        "secret",
        "*.secret",
        "superAdminKey",
        "*.superAdminKey",
        "dataKey",
        "*.dataKey",
        "previousDataKeys",
        "*.previousDataKeys",
        "dataKeyMaterial",
        "*.dataKeyMaterial",
        "licenseKeySecrets",
        "*.licenseKeySecrets",
        "LICENSD_DATA_KEY",
        "*.LICENSD_DATA_KEY",
        "LICENSD_DATA_KEY_PREVIOUS",
        "*.LICENSD_DATA_KEY_PREVIOUS",
        "password",
        "*.password",
      ],
      censor: "[redacted]",
    },
    mixin: () => logContext.getStore() ?? NONE,
    // pino's default merge writes into the mixin's object; the context is shared by the request's lines.
    mixinMergeStrategy: (line: object, context: object) => Object.assign({}, context, line),
  };
  return destination ? pino(options, destination) : pino(options);
}
