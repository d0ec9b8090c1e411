import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT, run, startServer, type ServerProcess } from "../support/server.js";
import { checkOutput, extractWalkthrough } from "../support/walkthrough.js";

// The README's walkthrough (and docs/import.md's examples) run as written, in one bash
// session, against `licensd serve` started as `npm start` starts it: development mode, the
// secrets generated into ./.licensd/secrets.json of the directory the commands run in.
// Every `# →` line is checked against what the commands above it printed.

const files = [
  { name: "README.md", path: path.join(ROOT, "README.md") },
  { name: "docs/import.md", path: path.join(ROOT, "docs/import.md") },
];

let server: ServerProcess & { dropDatabase(): Promise<void> };
let checkout: string;

beforeAll(async () => {
  // A stand-in for the checkout: the commands read ./.licensd/secrets.json and docs/examples/.
  checkout = mkdtempSync(path.join(os.tmpdir(), "licensd-walkthrough-"));
  symlinkSync(path.join(ROOT, "docs"), path.join(checkout, "docs"));
  mkdirSync(path.join(checkout, ".licensd"));
  server = await startServer({
    dataDir: path.join(checkout, ".licensd"),
    generateSecrets: true,
    // docs/import.md's Vinzy sample is signed with this demo keyring, as it says.
    env: { LICENSD_HMAC_KEYS: readFileSync(path.join(ROOT, "docs/examples/vinzy-keyring.json"), "utf8").trim() },
  });
});
afterAll(async () => {
  await server?.stop();
  await server?.dropDatabase();
});

describe("the README's walkthrough", () => {
  it("shows activation, usage, audit and imports, not only tenants and licensing", () => {
    const { script } = extractWalkthrough(files);
    for (const rpc of [
      "CreateTenant",
      "CreateApiKey",
      "CreateLicense",
      "ValidateLicense",
      "IssueLicenseFile",
      "SuspendLicense",
      "Activate",
      "Heartbeat",
      "Deactivate",
      "CreateMeter",
      "RecordUsage",
      "IngestUsage",
      "GetQuota",
      "GetUsageSummary",
      "ListAuditEvents",
      "VerifyAuditChain",
      "GetCheckpoint",
    ]) {
      expect(script, rpc).toMatch(new RegExp(`/${rpc}\\b`));
    }
    expect(script).toMatch(/npx licensd activation respond .*--key/);
    expect(script).toMatch(/npx licensd import docs\/examples\/datatools-issued\.jsonl/);
    expect(script).toMatch(/npx licensd import docs\/examples\/vinzy-licenses\.jsonl --format vinzy/);
  });

  it("runs as written against a real server, and prints what it says it prints", { timeout: 300_000 }, async () => {
    const walkthrough = extractWalkthrough(files);
    expect(walkthrough.checks.length).toBeGreaterThan(30);
    // `npx X` runs the checkout's own bin X; calling it directly spares npm's start-up
    // (seconds a call on a busy machine), and a package the checkout lacks fails here too.
    const preamble = [
      "set -eu",
      "exec 2>&1",
      // The CLI finds the super-admin key in ./.licensd/secrets.json, as after `npm start`.
      "unset LICENSD_SUPER_ADMIN_KEY LICENSD_DATA_KEY LICENSD_DATA_DIR LICENSD_API_KEY LICENSD_DATABASE_URL",
      `npx() { local bin=$1; shift; if [ "$bin" = licensd ]; then node ${JSON.stringify(path.join(ROOT, "bin/licensd.js"))} "$@"; else ${JSON.stringify(path.join(ROOT, "node_modules/.bin"))}/"$bin" "$@"; fi; }`,
      `trap 'echo "walkthrough: this command failed (status $?): $BASH_COMMAND"' ERR`,
    ].join("\n");
    const file = path.join(checkout, "walkthrough.sh");
    writeFileSync(file, `${preamble}\n\n${walkthrough.script}\n`);
    const env = { PATH: `${path.join(ROOT, "node_modules/.bin")}:${process.env.PATH}`, LICENSD_URL: server.url };
    const res = await run("bash", ["--noprofile", "--norc", file], { cwd: checkout, env });
    const output = res.stdout + res.stderr;
    expect(res.code, `the walkthrough (${file}) failed:\n${output}`).toBe(0);
    const problems = checkOutput(walkthrough, output);
    expect(problems, problems.join("\n\n")).toEqual([]);
  });
});
