/*
 * The Python package as a user installs it: `pip install ./clients/python` into a fresh
 * virtual environment made by Debian's Python with its system site packages (Debian's
 * grpcio, protobuf and cryptography; nothing from PyPI), then the package's own tests
 * (clients/python/tests, unittest) against a live licensd: client and typed errors,
 * verifiers on live-issued artifacts and the shared vectors, gates, LicenseGuard, and
 * UsageUploader with an agent SIGKILLed mid-upload; a webhook receiver written from
 * docs/webhooks.md accepting the server's deliveries. Last, with the server stopped,
 * LicenseGuard answers from the cache the online run left.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, ROOT, run, startServer, type ServerProcess } from "../support/server.js";
import { checkDocumentedReceiver, startReceiverProcess } from "../support/webhook-receiver.js";

const PACKAGE = path.join(ROOT, "clients/python");
const TESTS = path.join(PACKAGE, "tests");

let server: ServerProcess & { dropDatabase(): Promise<void> };
let work: string;
let python: string;

/** The venv's python, run from outside the repository with nothing on PYTHONPATH: only what pip installed is found. */
function py(args: string[], env: Record<string, string> = {}) {
  return run(python, args, { cwd: work, env: { PYTHONPATH: "", PYTHONDONTWRITEBYTECODE: "1", ...env } });
}

/** unittest's -v report: how many ran, and every test it skipped. */
function report(stderr: string) {
  const ran = Number(/^Ran (\d+) tests?/m.exec(stderr)?.[1] ?? 0);
  const skipped = stderr.split("\n").filter((l) => / \.\.\. skipped/.test(l));
  return { ran, skipped, ok: /^OK\b/m.test(stderr) };
}

beforeAll(async () => {
  // The webhook receiver listens on 127.0.0.1.
  server = await startServer({ env: { LICENSD_WEBHOOK_ALLOW_PRIVATE: "true" } });
  work = mkdtempSync(path.join(os.tmpdir(), "licensd-py-"));
  const venv = path.join(work, "venv");
  python = path.join(venv, "bin/python");
  const made = await run("/usr/bin/python3", ["-m", "venv", "--system-site-packages", venv]);
  expect(made.code, made.stderr).toBe(0);
  // An in-tree build leaves build/ behind; a stale one could carry files the sources no longer have.
  rmSync(path.join(PACKAGE, "build"), { recursive: true, force: true });
  const pip = await run(path.join(venv, "bin/pip"), [
    "install",
    "--no-index",
    "--no-build-isolation",
    "--disable-pip-version-check",
    PACKAGE,
  ]);
  expect(pip.code, pip.stdout + pip.stderr).toBe(0);
}, 180_000);

afterAll(async () => {
  await server?.stop();
  await server?.dropDatabase();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("the Python package, installed from its path", () => {
  it("installs into a fresh venv and uses Debian's grpcio and protobuf", async () => {
    const res = await py([
      "-c",
      [
        "import json, grpc, google.protobuf, google.rpc.status_pb2 as s, buf.validate.validate_pb2 as b",
        "import importlib, licensd_client, licensd.usage.v1.usage_service_pb2_grpc as u",
        "services = [importlib.import_module(f'licensd.{d}.v1.{d}_service_pb2_grpc')",
        "            for d in ('tenant', 'licensing', 'activation', 'usage', 'audit', 'webhook')]",
        "from importlib.metadata import version",
        "print(json.dumps({'client': licensd_client.__file__, 'stubs': u.__file__, 'rpc': s.__file__, 'validate': b.__file__,",
        " 'grpc': grpc.__file__, 'protobuf': google.protobuf.__file__, 'version': version('licensd-client'),",
        " 'exports': sorted(licensd_client.__all__), 'services': len(services)}))",
      ].join("\n"),
    ]);
    expect(res.code, res.stderr).toBe(0);
    const out = JSON.parse(res.stdout) as Record<string, string | string[] | number>;
    const site = path.join(work, "venv/lib");
    for (const key of ["client", "stubs", "rpc", "validate"]) expect(out[key]).toContain(site);
    expect(out.grpc).toMatch(/^\/usr\/lib\/python3\/dist-packages\//);
    expect(out.protobuf).toMatch(/^\/usr\/lib\/python3\/dist-packages\//);
    expect(out.version).toBe("0.1.0");
    expect(out.services).toBe(6);
    expect(out.exports).toEqual(
      expect.arrayContaining([
        "Client",
        "LicensdError",
        "verify_license_file",
        "verify_lease",
        "verify_validation_response",
        "verify_audit_proof",
        "SigningKeys",
        "LicenseInfo",
        "require_license",
        "require_feature",
        "WSGILicenseGate",
        "ASGILicenseGate",
        "LicenseGuard",
        "UsageUploader",
      ]),
    );
  });

  it("passes its own tests against the live server (client, verifiers, gates, guard, uploader crash test)", async () => {
    const res = await py(["-m", "unittest", "discover", "-v", "-s", TESTS, "-t", TESTS], {
      LICENSD_TEST_URL: server.url,
      LICENSD_TEST_SUPER_ADMIN_KEY: server.superAdminKey,
      LICENSD_TEST_STATE_DIR: work,
    });
    const r = report(res.stderr);
    expect(res.code, res.stderr.slice(-6000)).toBe(0);
    expect(r.ok).toBe(true);
    expect(r.ran).toBeGreaterThanOrEqual(35);
    // Only the offline half of LicenseGuard waits for the next test (the server stopped).
    expect(r.skipped.filter((l) => !l.includes("no offline guard state"))).toEqual([]);
    for (const name of [
      "test_killed_mid_upload_counts_every_event_once",
      "test_online_then_cached",
      "test_audit_inclusion_and_consistency",
      "test_wsgi_over_a_socket",
      "test_bad_input_names_reason_and_field",
      "test_webhook_vectors",
    ])
      expect(res.stderr).toContain(`${name} (`); // ran, and (exit 0, no skips) passed
  }, 240_000);

  it("speaks TLS to a licensd with a private CA, and refuses a certificate it does not trust", async () => {
    const cert = path.join(work, "cert.pem");
    const key = path.join(work, "key.pem");
    execFileSync(
      "openssl",
      [
        ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"],
        ...["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
      ],
      { stdio: "ignore" },
    );
    const port = await freePort();
    const tls = await startServer({
      env: { LICENSD_TLS_CERT: cert, LICENSD_TLS_KEY: key, LICENSD_PORT: String(port) },
      healthUrl: `https://127.0.0.1:${port}`,
      caFile: cert,
    });
    try {
      const res = await py([
        "-c",
        [
          "import json, sys",
          "from licensd_client import Client, LicensdError",
          "url, ca = sys.argv[1], open(sys.argv[2], 'rb').read()",
          "out = {}",
          "with Client(url, root_certificates=ca, retries=0) as c:",
          "    out['keys'] = len(c.activation.GetSigningKeys().keys)",
          "for name, opts in (('untrusted', {}), ('plaintext', {'tls': False})):",
          "    try:",
          "        with Client(url, retries=0, timeout=5, **opts) as c:",
          "            c.activation.GetSigningKeys()",
          "        out[name] = 'connected'",
          "    except LicensdError as err:",
          "        out[name] = err.code.name",
          "print(json.dumps(out))",
        ].join("\n"),
        `https://127.0.0.1:${port}`,
        cert,
      ]);
      expect(res.code, res.stderr).toBe(0);
      const out = JSON.parse(res.stdout) as Record<string, unknown>;
      expect(out.keys).toBeGreaterThanOrEqual(1);
      expect(out.untrusted).toBe("UNAVAILABLE");
      expect(out.plaintext).not.toBe("connected");
    } finally {
      await tls.stop();
      await tls.dropDatabase();
    }
  }, 120_000);

  it("a receiver written from docs/webhooks.md verifies live deliveries and refuses a wrong secret", async () => {
    await checkDocumentedReceiver(server, (port, secrets) =>
      startReceiverProcess(python, [path.join(ROOT, "test/e2e/python_webhook_receiver.py")], port, secrets, {
        PYTHONPATH: "",
        PYTHONDONTWRITEBYTECODE: "1",
      }),
    );
  }, 120_000);

  it("LicenseGuard answers from its cache once the server has stopped", async () => {
    expect(await server.stop()).toBe(0);
    const res = await py(["-m", "unittest", "-v", "test_guard_offline"], {
      PYTHONPATH: TESTS,
      LICENSD_TEST_URL: server.url,
      LICENSD_TEST_GUARD_STATE: path.join(work, "guard/state.json"),
    });
    const r = report(res.stderr);
    expect(res.code, res.stderr.slice(-4000)).toBe(0);
    expect(r).toMatchObject({ ran: 2, skipped: [], ok: true });
  }, 120_000);
});
