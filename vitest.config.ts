import { configDefaults, defineConfig } from "vitest/config";

export default defineConfig({
  // @licensd/client (clients/ts, an npm workspace) is tested from its sources.
  // Tests run in Vite's server (SSR) environment, which reads ssr.resolve.conditions, not resolve.conditions;
  // setting them replaces Vite's defaults (module, node, development|production), so they are listed too.
  resolve: { conditions: ["licensd-source"] },
  ssr: { resolve: { conditions: ["licensd-source", "module", "node", "development|production"] } },
  test: {
    include: ["test/**/*.test.ts", "clients/ts/test/**/*.test.ts"],
    // test/cluster/failover.test.ts (a pg_auto_failover formation, ~2 min) runs its short variant here: two failovers
    // and a rejoin; `npm run test:failover` runs it alone with more rounds (LICENSD_FAILOVER_ROUNDS).
    exclude: [...configDefaults.exclude],
    globalSetup: ["test/support/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    // Two cores: files run two at a time; each integration file gets its own database.
    maxWorkers: 2,
    reporters: ["default"],
  },
});
