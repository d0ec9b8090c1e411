import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { createApp, type App, type AppOptions } from "../../src/app.js";
import { loadConfig } from "../../src/config.js";
import { createLogger, type Logger } from "../../src/platform/logger.js";
import type { Clock } from "../../src/platform/clock.js";
import { createTestDatabase } from "./database.js";

export interface TestApp {
  app: App;
  url: string;
  databaseUrl: string;
  superAdminKey: string;
  close(): Promise<void>;
}

/** A real licensd (in this process) on a free port, on its own fresh PostgreSQL database. */
export async function startTestApp(
  opts: {
    clock?: Clock;
    env?: Record<string, string>;
    databaseUrl?: string;
    logger?: Logger;
    /** Further createApp options (the webhook network, …). */
    app?: Partial<AppOptions>;
  } = {},
): Promise<TestApp> {
  const database = opts.databaseUrl ? undefined : await createTestDatabase();
  const databaseUrl = opts.databaseUrl ?? database!.url;
  const superAdminKey = randomBytes(32).toString("base64url");
  const config = loadConfig({
    LICENSD_PORT: "0",
    LICENSD_DATABASE_URL: databaseUrl,
    LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-test-")),
    LICENSD_SUPER_ADMIN_KEY: superAdminKey,
    LICENSD_DATA_KEY: randomBytes(32).toString("base64"),
    LICENSD_SHUTDOWN_TIMEOUT_MS: "5000",
    ...opts.env,
  });
  const app = await createApp(config, {
    ...opts.app,
    clock: opts.clock,
    logger: opts.logger ?? createLogger(process.env.LICENSD_TEST_LOG ?? "silent"),
  });
  return {
    app,
    url: app.url,
    databaseUrl,
    superAdminKey,
    async close() {
      await app.close();
      await database?.drop();
    },
  };
}

export const bearer = (key: string | undefined): Interceptor[] =>
  key === undefined
    ? []
    : [
        (next) => (req) => {
          req.header.set("authorization", `Bearer ${key}`);
          return next(req);
        },
      ];

/** A Connect (HTTP/1.1, JSON) client; `key` is sent as the bearer token. */
export function connectClient<T extends DescService>(service: T, url: string, key?: string): Client<T> {
  return createClient(
    service,
    createConnectTransport({ baseUrl: url, httpVersion: "1.1", useBinaryFormat: false, interceptors: bearer(key) }),
  );
}

/** A gRPC (HTTP/2 cleartext) client. */
export function grpcClient<T extends DescService>(service: T, url: string, key?: string): Client<T> {
  const transport: Transport = createGrpcTransport({ baseUrl: url, interceptors: bearer(key) });
  return createClient(service, transport);
}
