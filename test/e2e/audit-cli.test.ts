import { mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { query } from "../support/database.js";
import { ROOT, run, startServer, type ServerProcess } from "../support/server.js";

let server: ServerProcess & { dropDatabase(): Promise<void> };

beforeAll(async () => {
  // On the test database server: the test tampers with tables as their owner would.
  server = await startServer({ embedded: false });
});
afterAll(async () => {
  await server?.stop();
  await server?.dropDatabase();
});

async function call(procedure: string, body: unknown, key = server.superAdminKey) {
  const res = await fetch(`${server.url}/${procedure}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify(body),
  });
  return (await res.json()) as Record<string, never> & { tenant: { id: string } };
}

const licensd = (args: string[], env: Record<string, string> = {}) =>
  run(process.execPath, [path.join(ROOT, "bin/licensd.js"), ...args], {
    env: { LICENSD_SUPER_ADMIN_KEY: server.superAdminKey, ...env },
  });

describe("licensd audit verify", () => {
  it("verifies the signed checkpoint, consistency with the last run, and an entry's inclusion; catches a rewritten history", async () => {
    const { tenant } = await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "CLI Co" });
    const state = path.join(mkdtempSync(path.join(os.tmpdir(), "licensd-verify-")), "checkpoint.json");
    const first = await licensd(["audit", "verify", "--url", server.url, "--tenant", tenant.id, "--state", state]);
    expect(first.code, first.stdout + first.stderr).toBe(0);
    expect(first.stdout).toMatch(/^ok {3}checkpoint of ten_\w+: 1 entries/m);
    expect(JSON.parse(readFileSync(state, "utf8")).treeSize).toBe(1);

    for (let i = 0; i < 4; i++)
      await call("licensd.tenant.v1.TenantService/UpdateTenant", {
        tenant: { id: tenant.id, metadata: { i: String(i) } },
        updateMask: "metadata",
      });
    const second = await licensd([
      "audit",
      "verify",
      "--url",
      server.url,
      "--tenant",
      tenant.id,
      "--state",
      state,
      "--seq",
      "3",
    ]);
    expect(second.code, second.stdout).toBe(0);
    expect(second.stdout).toContain("ok   consistent with the saved checkpoint of 1 entries");
    expect(second.stdout).toContain("ok   entry 3 is in the signed tree");
    const { events } = (await call("licensd.audit.v1.AuditService/ListAuditEvents", {
      tenantId: tenant.id,
    })) as unknown as { events: { id: string; seq: string }[] };
    const byEvent = await licensd([
      "audit",
      "verify",
      "--url",
      server.url,
      "--tenant",
      tenant.id,
      "--event",
      events.find((e) => e.seq === "2")!.id,
    ]);
    expect(byEvent.code, byEvent.stdout).toBe(0);
    expect(byEvent.stdout).toMatch(
      /^ok {3}entry evt_\w+ \(seq 2, tenant\.updated\) hashes to [0-9a-f]{16}… and is in the signed tree/m,
    );
    // An entry whose content was changed (its stored hash left alone) is caught.
    await query(
      server.env.LICENSD_DATABASE_URL,
      `set session_replication_role = replica; update audit_events set actor = 'someone-else' where tenant_id = '${tenant.id}' and seq = 2`,
    );
    const altered = await licensd([
      "audit",
      "verify",
      "--url",
      server.url,
      "--tenant",
      tenant.id,
      "--event",
      events.find((e) => e.seq === "2")!.id,
    ]);
    expect(altered.code, altered.stdout).toBe(4);
    expect(altered.stdout).toMatch(/^FAIL entry evt_\w+ \(seq 2/m);

    // Rewrite history as a database owner could: replace the subtree over entries 1–4.
    await query(
      server.env.LICENSD_DATABASE_URL,
      `set session_replication_role = replica; update audit_tree_nodes set hash = sha256('rewritten'::bytea) where tenant_id = '${tenant.id}' and level = 2 and index = 0`,
    );
    const third = await licensd(["audit", "verify", "--url", server.url, "--tenant", tenant.id, "--state", state]);
    expect(third.code).toBe(4);
    expect(third.stdout).toContain("FAIL consistent with the saved checkpoint of 5 entries");
  });

  it("prunes a prefix as the retention job, and the log still verifies", async () => {
    const { tenant } = await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "Pruned Co" });
    for (let i = 0; i < 3; i++)
      await call("licensd.tenant.v1.TenantService/UpdateTenant", {
        tenant: { id: tenant.id, metadata: { i: String(i) } },
        updateMask: "metadata",
      });
    // Through the API: the command needs no database URL nor data key.
    const pruned = await licensd([
      "audit",
      "prune",
      "--url",
      server.url,
      "--tenant",
      tenant.id,
      "--through-seq",
      "2",
      "--json",
    ]);
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(JSON.parse(pruned.stdout)).toEqual({ removedCount: "2", throughSeq: "2" });
    const report = await call("licensd.audit.v1.AuditService/VerifyAuditChain", { tenantId: tenant.id });
    expect(report).toMatchObject({ valid: true, startSeq: "3", endSeq: "5" });
    const again = await licensd(["audit", "prune", "--url", server.url, "--tenant", tenant.id, "--through-seq", "2"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("is not in the log");
    const bad = await licensd(["audit", "prune", "--tenant", tenant.id]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--through-seq or --older-than");
  });

  it("licensd keys rotate starts a new signing key through the API, which the server publishes at once", async () => {
    const before = (await call("licensd.activation.v1.ActivationService/GetSigningKeys", {})) as unknown as {
      keys: { kid: string }[];
    };
    const res = await licensd(["keys", "rotate", "--url", server.url, "--retire-after", "600", "--json"]);
    expect(res.code, res.stderr).toBe(0);
    const rotated = JSON.parse(res.stdout) as { key: { kid: string; status: string }; retiringKids: string[] };
    expect(rotated.retiringKids).toEqual([before.keys[0].kid]);
    expect(rotated.key).toMatchObject({ kid: expect.stringMatching(/^sk_/), status: "SIGNING_KEY_STATUS_ACTIVE" });
    const after = (await call("licensd.activation.v1.ActivationService/GetSigningKeys", {})) as unknown as {
      keys: { kid: string; status: string; notAfter: string }[];
    };
    expect(after.keys.map((k) => [k.kid, k.status])).toEqual([
      [rotated.key.kid, "SIGNING_KEY_STATUS_ACTIVE"],
      [before.keys[0].kid, "SIGNING_KEY_STATUS_RETIRING"],
    ]);
    const bad = await licensd(["keys", "rotate", "--url", server.url, "--retire-after", "-1"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--retire-after");
    // Only the super-admin rotates keys.
    const { tenant } = await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "Not Admin Co" });
    const { secret } = (await call("licensd.tenant.v1.TenantService/CreateApiKey", {
      tenantId: tenant.id,
      name: "a",
      scopes: ["API_KEY_SCOPE_ADMIN"],
    })) as unknown as { secret: string };
    const refused = await licensd(["keys", "rotate", "--url", server.url, "--key", secret]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("super-admin");
  });
});

describe("the command line itself", () => {
  it("prints its version and every command's help (defaults included)", async () => {
    const { version } = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string };
    const [long, short, rotate, ...helps] = await Promise.all([
      licensd(["--version"]),
      licensd(["-V"]),
      licensd(["keys", "rotate", "--help"]),
      ...[[], ["serve"], ["migrate"], ["audit", "prune"]].map((command) => licensd([...command, "--help"])),
    ]);
    for (const res of [long, short]) {
      expect(res.code, res.stderr).toBe(0);
      expect(res.stdout.trim()).toBe(version);
    }
    expect(rotate.code, rotate.stderr).toBe(0);
    expect(rotate.stdout).toContain("--retire-after <duration>");
    expect(rotate.stdout).toContain("(default: 30d)");
    for (const res of helps) {
      expect(res.code, res.stderr).toBe(0);
      expect(res.stdout).toContain("Usage: licensd");
    }
  });
});
