import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = path.resolve(import.meta.dirname, "../..");
const CONFIG = path.join(ROOT, ".dependency-cruiser.cjs");
const CLI = path.join(ROOT, "node_modules", "dependency-cruiser", "bin", "dependency-cruiser.mjs");

function depcruise(cwd: string) {
  return spawnSync(process.execPath, [CLI, "src", "--config", CONFIG], { cwd, encoding: "utf8" });
}

describe("the dependency rules (npm run deps)", () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it("hold for src/ today", () => {
    const res = depcruise(ROOT);
    expect(res.stdout + res.stderr).toContain("no dependency violations found");
    expect(res.status).toBe(0);
  });

  it("fail on forbidden imports, type-only ones included, naming each broken rule", () => {
    // A small tree laid out like src/, with one forbidden import per rule.
    const dir = mkdtempSync(path.join(os.tmpdir(), "licensd-deps-"));
    dirs.push(dir);
    const files: Record<string, string> = {
      "tsconfig.json": JSON.stringify({
        compilerOptions: {
          module: "NodeNext",
          moduleResolution: "NodeNext",
          allowImportingTsExtensions: true,
          noEmit: true,
        },
      }),
      "src/config.ts": "export const port = 1;\n",
      "src/platform/clock.ts":
        'import { port } from "../config.js";\nimport type { License } from "../licensing/license.ts";\nexport const p: License | number = port;\n',
      "src/licensing/license.ts":
        'import type { Machine } from "../activation/machine.js";\nexport type License = { machine?: Machine };\n',
      "src/activation/machine.ts": "export type Machine = { id: string };\n",
      "src/events/feed.ts": 'import type { Machine } from "../activation/machine.js";\nexport type Feed = Machine[];\n',
      // The client package (an npm workspace, linked into node_modules), by path and by name; the CLI may use it, the
      // server may not.
      "clients/ts/package.json": JSON.stringify({
        name: "@licensd/client",
        type: "module",
        exports: { ".": { "licensd-source": "./src/index.ts", default: "./dist/src/index.js" } },
      }),
      "clients/ts/src/index.ts": "export const createLicensdClient = () => ({});\n",
      "clients/ts/src/verify/lease.ts": "export const verifyLease = () => true;\n",
      "src/usage/meter.ts":
        'import { verifyLease } from "../../clients/ts/src/verify/lease.js";\nexport const m = verifyLease;\n',
      "src/tenants/tenant.ts":
        'import type { createLicensdClient } from "@licensd/client";\nexport type T = typeof createLicensdClient;\n',
      "src/cli/main.ts":
        'import { createLicensdClient } from "@licensd/client";\nimport { verifyLease } from "../../clients/ts/src/verify/lease.js";\n' +
        "export const c = [createLicensdClient, verifyLease];\n",
    };
    for (const [file, text] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
      writeFileSync(path.join(dir, file), text);
    }
    mkdirSync(path.join(dir, "node_modules/@licensd"), { recursive: true });
    symlinkSync("../../clients/ts", path.join(dir, "node_modules/@licensd/client"));
    const res = depcruise(dir);
    expect(res.status).not.toBe(0);
    const out = res.stdout + res.stderr;
    expect(out).toContain("error platform-knows-no-domain: src/platform/clock.ts → src/config.ts");
    expect(out).toContain("error platform-knows-no-domain: src/platform/clock.ts → src/licensing/license.ts");
    expect(out).toContain("error domain-imports-no-other-domain: src/licensing/license.ts → src/activation/machine.ts");
    expect(out).toContain("error events-imports-only-platform: src/events/feed.ts → src/activation/machine.ts");
    expect(out).toContain("error server-imports-no-client: src/usage/meter.ts → clients/ts/src/verify/lease.ts");
    expect(out).toContain("error server-imports-no-client: src/tenants/tenant.ts → clients/ts/src/index.ts");
    expect(out).not.toMatch(/server-imports-no-client: src\/cli\//);
  });
});
