import { readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Health,
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as S,
} from "../../gen/ts/health/v1/health_pb.js";
import {
  GetTenantRequestSchema,
  GetTenantResponseSchema,
  TenantService,
} from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { bearer } from "../support/app.js";
import { BUF, ROOT, run, startServer, type ServerProcess } from "../support/server.js";

let server: ServerProcess & { dropDatabase(): Promise<void> };
let tenantId: string;

beforeAll(async () => {
  server = await startServer();
  const res = await curlJson("licensd.tenant.v1.TenantService/CreateTenant", {
    name: "E2E Vendor",
    metadata: { tier: "gold" },
  });
  tenantId = (res.body as { tenant: { id: string } }).tenant.id;
});
afterAll(async () => {
  expect(await server?.stop()).toBe(0);
  await server?.dropDatabase();
});

async function curlJson(procedure: string, body: unknown, key: string | null = server.superAdminKey) {
  const args = [
    "-s",
    "-w",
    "\n%{http_code}",
    "-X",
    "POST",
    `${server.url}/${procedure}`,
    "-H",
    "content-type: application/json",
    "--data-binary",
    JSON.stringify(body),
  ];
  if (key) args.push("-H", `authorization: Bearer ${key}`);
  const { stdout } = await run("curl", args);
  const lines = stdout.trimEnd().split("\n");
  const status = Number(lines.pop());
  return { status, body: JSON.parse(lines.join("\n")) as Record<string, unknown> };
}

async function bufCurl(args: string[]) {
  const res = await run(BUF, ["curl", "--http2-prior-knowledge", ...args]);
  if (res.code !== 0) throw new Error(`buf curl ${args.join(" ")} failed (${res.code}): ${res.stderr}`);
  return res.stdout;
}

describe("Connect over curl", () => {
  it("creates and reads with Connect JSON over HTTP/1.1", async () => {
    const got = await curlJson("licensd.tenant.v1.TenantService/GetTenant", { id: tenantId });
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ tenant: { id: tenantId, name: "E2E Vendor", metadata: { tier: "gold" } } });
  });

  it("compresses a large answer with the encoding the client names first, gzip or brotli", async () => {
    const metadata = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, `value ${i} `.repeat(10)]));
    const id = (
      (await curlJson("licensd.tenant.v1.TenantService/CreateTenant", { name: "Big Metadata", metadata })).body as {
        tenant: { id: string };
      }
    ).tenant.id;
    const plain = await curlJson("licensd.tenant.v1.TenantService/GetTenant", { id });
    for (const [accept, encoding, inflate] of [
      ["br, gzip", "br", zlib.brotliDecompressSync],
      ["gzip, br", "gzip", zlib.gunzipSync],
    ] as const) {
      const out = path.join(os.tmpdir(), `licensd-e2e-${encoding}-${process.pid}.bin`);
      const { stdout } = await run("curl", [
        "-s",
        "-D",
        "-",
        "-o",
        out,
        "-X",
        "POST",
        `${server.url}/licensd.tenant.v1.TenantService/GetTenant`,
        "-H",
        "content-type: application/json",
        "-H",
        `accept-encoding: ${accept}`,
        "-H",
        `authorization: Bearer ${server.superAdminKey}`,
        "--data-binary",
        JSON.stringify({ id }),
      ]);
      expect(stdout.toLowerCase()).toContain(`content-encoding: ${encoding}`);
      const body = readFileSync(out);
      expect(body.length).toBeLessThan(JSON.stringify(plain.body).length / 2);
      expect(JSON.parse(inflate(body).toString())).toEqual(plain.body);
    }
  });

  it("serves NO_SIDE_EFFECTS reads over Connect GET", async () => {
    const message = encodeURIComponent(JSON.stringify({ id: tenantId }));
    const { stdout } = await run("curl", [
      "-s",
      "-H",
      `authorization: Bearer ${server.superAdminKey}`,
      `${server.url}/licensd.tenant.v1.TenantService/GetTenant?connect=v1&encoding=json&message=${message}`,
    ]);
    expect(JSON.parse(stdout)).toMatchObject({ tenant: { id: tenantId } });
  });

  it("answers bad input with invalid_argument, the field and ErrorInfo", async () => {
    const res = await curlJson("licensd.tenant.v1.TenantService/CreateTenant", { name: "" });
    expect(res.status).toBe(400);
    expect(res.body.code).toBe("invalid_argument");
    expect(res.body.message).toContain("name");
    expect(JSON.stringify(res.body.details)).toContain("google.rpc.ErrorInfo");
    for (const body of ['{"name": ', '{"nmae": "typo"}', '{"name": 5}', "[]"]) {
      const { stdout } = await run("curl", [
        "-s",
        "-w",
        "\n%{http_code}",
        "-X",
        "POST",
        `${server.url}/licensd.tenant.v1.TenantService/CreateTenant`,
        "-H",
        "content-type: application/json",
        "-H",
        `authorization: Bearer ${server.superAdminKey}`,
        "--data-binary",
        body,
      ]);
      const [json, status] = stdout.split("\n");
      expect(status, body).toBe("400");
      expect(JSON.parse(json).code, body).toBe("invalid_argument");
    }
    const anon = await curlJson("licensd.tenant.v1.TenantService/ListTenants", {}, null);
    expect(anon).toMatchObject({ status: 401, body: { code: "unauthenticated" } });
  });

  it("serves /healthz over HTTP/1.1 and h2c on the same port", async () => {
    expect((await run("curl", ["-s", `${server.url}/healthz`])).stdout).toBe("ok\n");
    const h2 = await run("curl", [
      "-s",
      "--http2-prior-knowledge",
      "-o",
      "/dev/null",
      "-w",
      "%{http_version}",
      `${server.url}/healthz`,
    ]);
    expect(h2.stdout).toBe("2");
  });
});

describe("buf curl through server reflection", () => {
  it("lists every service", async () => {
    const out = await bufCurl(["--list-services", server.url]);
    for (const name of [
      "licensd.tenant.v1.TenantService",
      "licensd.licensing.v1.LicensingService",
      "licensd.activation.v1.ActivationService",
      "licensd.usage.v1.UsageService",
      "licensd.audit.v1.AuditService",
      "licensd.webhook.v1.WebhookService",
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
    ]) {
      expect(out).toContain(name);
    }
    expect(await bufCurl(["--list-methods", server.url])).toContain(
      "licensd.webhook.v1.WebhookService/SendTestWebhook",
    );
    expect(await bufCurl(["--list-methods", server.url])).toContain("licensd.tenant.v1.TenantService/CreateApiKey");
  });

  for (const protocol of ["grpc", "grpcweb", "connect"]) {
    it(`calls TenantService schema-less over --protocol ${protocol}`, async () => {
      const out = await bufCurl([
        "--protocol",
        protocol,
        "-H",
        `authorization: Bearer ${server.superAdminKey}`,
        "-d",
        JSON.stringify({ id: tenantId }),
        `${server.url}/licensd.tenant.v1.TenantService/GetTenant`,
      ]);
      expect(JSON.parse(out)).toMatchObject({ tenant: { id: tenantId, name: "E2E Vendor" } });
    });
  }

  it("works with the v1alpha reflection protocol too", async () => {
    const out = await bufCurl([
      "--reflect-protocol",
      "grpc-v1alpha",
      "--protocol",
      "grpc",
      `${server.url}/grpc.health.v1.Health/Check`,
    ]);
    expect(JSON.parse(out)).toEqual({ status: "SERVING" });
  });

  it("reports errors with their gRPC code", async () => {
    const res = await run(BUF, [
      "curl",
      "--http2-prior-knowledge",
      "--protocol",
      "grpc",
      "-d",
      "{}",
      `${server.url}/licensd.tenant.v1.TenantService/ListTenants`,
    ]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain("unauthenticated");
  });
});

describe("@grpc/grpc-js with the generated code", () => {
  const unary = <I extends DescMessage, O extends DescMessage>(
    client: grpc.Client,
    method: string,
    input: I,
    output: O,
    msg: MessageShape<I>,
    md: grpc.Metadata,
  ) =>
    new Promise<MessageShape<O>>((resolve, reject) => {
      client.makeUnaryRequest(
        method,
        (m: MessageShape<I>) => Buffer.from(toBinary(input, m)),
        (b: Buffer) => fromBinary(output, b),
        msg,
        md,
        (err, res) => (err ? reject(err) : resolve(res!)),
      );
    });

  it("calls GetTenant and streams Health.Watch over HTTP/2", async () => {
    const client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${server.superAdminKey}`);
    const got = await unary(
      client,
      "/licensd.tenant.v1.TenantService/GetTenant",
      GetTenantRequestSchema,
      GetTenantResponseSchema,
      create(GetTenantRequestSchema, { id: tenantId }),
      md,
    );
    expect(got.tenant!.name).toBe("E2E Vendor");

    const err = await unary(
      client,
      "/licensd.tenant.v1.TenantService/GetTenant",
      GetTenantRequestSchema,
      GetTenantResponseSchema,
      create(GetTenantRequestSchema, { id: "bad" }),
      md,
    ).catch((e: grpc.ServiceError) => e);
    expect((err as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((err as grpc.ServiceError).metadata.get("grpc-status-details-bin")).toHaveLength(1);

    const stream = client.makeServerStreamRequest(
      "/grpc.health.v1.Health/Watch",
      (m: MessageShape<typeof HealthCheckRequestSchema>) => Buffer.from(toBinary(HealthCheckRequestSchema, m)),
      (b: Buffer) => fromBinary(HealthCheckResponseSchema, b),
      create(HealthCheckRequestSchema, { service: "licensd.tenant.v1.TenantService" }),
    );
    const first = await new Promise<MessageShape<typeof HealthCheckResponseSchema>>((resolve, reject) => {
      stream.once("data", resolve);
      stream.once("error", reject);
    });
    expect(first.status).toBe(S.SERVING);
    stream.cancel();
    client.close();
  });
});

describe("gRPC-Web over HTTP/1.1", () => {
  it("calls unary and server-streaming RPCs", async () => {
    const transport = createGrpcWebTransport({
      baseUrl: server.url,
      httpVersion: "1.1",
      interceptors: bearer(server.superAdminKey),
    });
    const tenants = createClient(TenantService, transport);
    expect((await tenants.getTenant({ id: tenantId })).tenant!.name).toBe("E2E Vendor");
    const health = createClient(Health, transport);
    const abort = new AbortController();
    const stream = health.watch({ service: "" }, { signal: abort.signal })[Symbol.asyncIterator]();
    expect((await stream.next()).value.status).toBe(S.SERVING);
    abort.abort();
  });
});

describe("the generated Python client (grpcio)", () => {
  it("manages tenants and keys, sees only its own tenant, and reads ErrorInfo", async () => {
    const res = await run("/usr/bin/python3", [
      path.join(ROOT, "test/e2e/python_client.py"),
      `127.0.0.1:${server.port}`,
      server.superAdminKey,
    ]);
    expect(res.code, res.stderr).toBe(0);
    const out = JSON.parse(res.stdout);
    expect(out.tenant_a).toMatchObject({ name: "Py Tenant A", metadata: { sdk: "python" } });
    expect(out.secret_prefix).toBe("lsk_");
    expect(out.a_sees_itself).toBe(true);
    expect(out.a_keys).toEqual([out.a_key_id]);
    expect(out.b_keys).not.toContain(out.a_key_id);
    expect(out.cross_tenant).toMatchObject({
      code: "NOT_FOUND",
      info: { reason: "TENANT_NOT_FOUND", domain: "licensd.dev" },
    });
    expect(out.bad_input).toMatchObject({
      code: "INVALID_ARGUMENT",
      info: { reason: "INVALID_ARGUMENT", metadata: { field: "name" } },
    });
    expect(out.anonymous).toEqual({ code: "UNAUTHENTICATED" });
  });
});
