import { pino, type DestinationStream, type Logger } from "pino";

export type { Logger };

/**
 * JSON logs on stdout. Authorization headers, secrets and keys are redacted by path
 * as a second line of defence; the code never passes them to the logger.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: "licensd", pid: process.pid },
    redact: {
      paths: ["authorization", "*.authorization", "secret", "*.secret", "superAdminKey", "*.superAdminKey", "dataKey", "*.dataKey", "password", "*.password"],
      censor: "[redacted]",
    },
  };
  return destination ? pino(options, destination) : pino(options);
}
