import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { OPERATIONS, readRunbook } from "../support/runbook.js";
import { ROOT } from "../support/server.js";

/** Every runbook in docs/operations.md is a drill: some test runs it through `new Runbook("<id>", …)`. */
const ids = [...readFileSync(OPERATIONS, "utf8").matchAll(/^<!-- drill: ([a-z0-9-]+) -->$/gm)].map((m) => m[1]!);

function testSources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const file = path.join(dir, name);
    if (statSync(file).isDirectory()) return testSources(file);
    return name.endsWith(".test.ts") ? [readFileSync(file, "utf8")] : [];
  });
}
const tests = testSources(path.join(ROOT, "test")).join("\n");

describe("docs/operations.md", () => {
  it("has the runbooks issue 24 asks for", () => {
    expect(ids).toEqual(
      expect.arrayContaining([
        "signing-key-rotation",
        "data-key-rotation",
        "signing-key-loss",
        "backup-restore",
        "rolling-upgrade",
        "failover-rejoin",
      ]),
    );
  });

  it.each(ids)("runbook %s has commands and a drill that runs it", (id) => {
    const { steps } = readRunbook(id);
    expect(steps.some((s) => s.script.trim() !== "")).toBe(true);
    expect(tests).toMatch(new RegExp(`new Runbook\\(\\s*"${id}"`));
  });
});
