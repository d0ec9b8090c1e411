import { defineConfig } from "vitest/config";

export default defineConfig({
  // @licensd/client (clients/ts, an npm workspace) is tested from its sources.
  resolve: { conditions: ["licensd-source"] },
  // Tests run in Vite's server (SSR) environment, which takes its own conditions: Vite's defaults plus ours.
  ssr: { resolve: { conditions: ["licensd-source", "module", "node", "development|production"] } },
  test: {
    include: ["test/**/*.test.ts", "clients/ts/test/**/*.test.ts"],
    globalSetup: ["test/support/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    // Two cores: files run two at a time; each integration file gets its own database.
    maxWorkers: 2,
    reporters: ["default"],
  },
});
