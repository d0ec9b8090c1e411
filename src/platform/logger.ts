import { pino, type Logger } from "pino";

export type { Logger };

/**
 * JSON logs on stdout. Authorization headers, secrets and keys are redacted by path
 * as a second line of defence; the code never passes them to the logger.
 */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: "licensd", pid: process.pid },
    redact: {
      paths: ["authorization", "*.authorization", "secret", "*.secret", "superAdminKey", "*.superAdminKey", "dataKey", "*.dataKey", "password", "*.password"],
      censor: "[redacted]",
    },
  });
}
