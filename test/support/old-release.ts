import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ROOT } from "./server.js";

/**
 * A previous version of licensd, from this repository's history, built into
 * node_modules/.cache/licensd-upgrade-<commit> (kept, so a rerun does not build it again). Its sources come from
 * `git archive`; its node_modules are this checkout's packages, linked one by one, except the workspace client
 * (@licensd/client), which is the old commit's own. Its build is what its package.json said: the client package,
 * then `tsc -b tsconfig.build.json`.
 */
export interface OldRelease {
  commit: string;
  dir: string;
  /** Its bin/licensd.js. */
  bin: string;
  /** Milliseconds the build took (0 when it came from the cache). */
  buildMs: number;
}

function git(...args: string[]): string {
  return execFileSync("git", args, { cwd: ROOT, encoding: "utf8" }).trim();
}

/** The commit just before `file` was added: the last release without it. */
export function commitBefore(file: string): string {
  const added = git("log", "--diff-filter=A", "--format=%H", "--", file).split("\n").at(-1);
  if (!added)
    throw new Error(`no commit adds ${file}: the previous release is built from git history (a full clone is needed)`);
  return git("rev-parse", `${added}^`);
}

export function buildOldRelease(commit: string): OldRelease {
  const dir = path.join(ROOT, "node_modules/.cache", `licensd-upgrade-${commit}`);
  const bin = path.join(dir, "bin/licensd.js");
  const done = path.join(dir, ".built");
  if (existsSync(done)) return { commit, dir, bin, buildMs: 0 };
  const started = Date.now();
  // Built outside node_modules: tsc emits no JSON module (package.json, which the CLI imports) from under one.
  const tmp = mkdtempSync(path.join(os.tmpdir(), "licensd-old-release-"));
  execFileSync("bash", ["-c", `git archive ${commit} | tar -x -C ${JSON.stringify(tmp)}`], { cwd: ROOT });
  const modules = path.join(tmp, "node_modules");
  mkdirSync(path.join(modules, "@licensd"), { recursive: true });
  for (const name of readdirSync(path.join(ROOT, "node_modules"))) {
    if (name === "@licensd" || name === ".cache" || name === ".package-lock.json") continue;
    symlinkSync(path.join(ROOT, "node_modules", name), path.join(modules, name));
  }
  symlinkSync("../../clients/ts", path.join(modules, "@licensd/client"));
  const node = ["bash", path.join(ROOT, "scripts/with-node.sh"), "node"];
  const tsc = path.join(ROOT, "node_modules/typescript/bin/tsc");
  const sh = (cmd: string[], cwd: string) =>
    execFileSync(cmd[0]!, cmd.slice(1), { cwd, stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" });
  const client = path.join(tmp, "clients/ts");
  sh([...node, "scripts/copy-gen.mjs"], client);
  sh([...node, tsc, "-p", "tsconfig.build.json"], client);
  sh([...node, tsc, "-b", "tsconfig.build.json"], tmp);
  writeFileSync(path.join(tmp, ".built"), `${new Date().toISOString()}\n`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(path.dirname(dir), { recursive: true });
  // The relative link to the old client still holds after the move.
  execFileSync("mv", [tmp, dir]);
  return { commit, dir, bin, buildMs: Date.now() - started };
}
