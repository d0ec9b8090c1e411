// The protocol edge as real clients meet it: what connect-es itself refuses (bytes it
// cannot decode, unknown JSON fields), how grpc-message reads in each client,
// grpc-web-text from Google's grpc-web client, Cache-Control on Connect GET, streams
// ended by their deadline, clients hanging up, and reflection of the error details.
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import grpcWeb from "grpc-web";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/ts/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../gen/ts/google/rpc/status_pb.js";
import { Health, HealthCheckRequestSchema, HealthCheckResponseSchema } from "../../gen/ts/health/v1/health_pb.js";
import {
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
} from "../../gen/ts/grpc/reflection/v1/reflection_pb.js";
import {
  ConnectLeaseRequestSchema,
  ConnectLeaseResponseSchema,
} from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import {
  TailAuditEventsRequestSchema,
  TailAuditEventsResponseSchema,
} from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import {
  CreateTenantRequestSchema,
  GetTenantRequestSchema,
  GetTenantResponseSchema,
} from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { BUF, ROOT, run, startServer, type ServerProcess } from "../support/server.js";

// Google's grpc-web client runs on XMLHttpRequest; in Node a polyfill gives it one (which
// hands over a response body when it ends, so streams here are ones that end).
(globalThis as { XMLHttpRequest?: unknown }).XMLHttpRequest = createRequire(import.meta.url)(
  "xmlhttprequest-ssl",
) as unknown;

let server: ServerProcess & { dropDatabase(): Promise<void> };
let tenantId: string;
const tmp = mkdtempSync(path.join(os.tmpdir(), "licensd-edge-"));

beforeAll(async () => {
  server = await startServer();
  tenantId = (
    (await post("licensd.tenant.v1.TenantService/CreateTenant", { name: "Edge Vendor" })).body as {
      tenant: { id: string };
    }
  ).tenant.id;
  // A few audit entries for the tails below to stream.
  for (const name of ["Edge Vendor 2", "Edge Vendor 3"]) {
    await post("licensd.tenant.v1.TenantService/UpdateTenant", { tenant: { id: tenantId, name }, updateMask: "name" });
  }
});
afterAll(async () => {
  expect(await server?.stop()).toBe(0);
  await server?.dropDatabase();
});

/** Connect JSON with fetch. */
async function post(procedure: string, body: unknown, key: string | null = server.superAdminKey) {
  const res = await fetch(`${server.url}/${procedure}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
}

/**
 * curl with a binary body, as a user would send it; returns status, headers (trailers too, later ones win) and body.
 */
async function curl(url: string, body: Buffer | string, headers: string[], extra: string[] = []) {
  const file = path.join(tmp, `body-${Math.random().toString(36).slice(2)}`);
  writeFileSync(file, body);
  const out = path.join(tmp, `out-${Math.random().toString(36).slice(2)}`);
  const res = await run("curl", [
    "-s",
    "-D",
    "-",
    "-o",
    out,
    ...extra,
    ...headers.flatMap((h) => ["-H", h]),
    "--data-binary",
    `@${file}`,
    url,
  ]);
  const head: Record<string, string> = {};
  let status = 0;
  for (const line of res.stdout.split("\r\n")) {
    const m = /^HTTP\/[\d.]+ (\d+)/.exec(line);
    if (m) status = Number(m[1]);
    const i = line.indexOf(":");
    if (i > 0) head[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
  }
  return { status, headers: head, body: readFileSync(out) };
}

/** One RPC over HTTP/2 with Node's client: the answer's headers, trailers and body. */
function h2(pathname: string, headers: Record<string, string>, body: Buffer) {
  return new Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: Buffer }>(
    (resolve, reject) => {
      const session = http2.connect(server.url);
      session.on("error", reject);
      const req = session.request({ ":method": "POST", ":path": `/${pathname}`, te: "trailers", ...headers });
      let head: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      req.on("response", (h) => (head = h));
      req.on("trailers", (t) => (trailers = t));
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        session.close();
        resolve({ headers: head, trailers, body: Buffer.concat(chunks) });
      });
      req.on("error", reject);
      req.end(body);
    },
  );
}

const frame = (data: Uint8Array, flags = 0) => {
  const out = Buffer.alloc(5 + data.length);
  out[0] = flags;
  out.writeUInt32BE(data.length, 1);
  Buffer.from(data).copy(out, 5);
  return out;
};

/** The frames of a gRPC-Web body. */
function frames(body: Buffer) {
  const out: { flags: number; data: Buffer }[] = [];
  for (let i = 0; i + 5 <= body.length; ) {
    const size = body.readUInt32BE(i + 1);
    out.push({ flags: body[i], data: body.subarray(i + 5, i + 5 + size) });
    i += 5 + size;
  }
  return out;
}

/** The code and ErrorInfo of a gRPC status in trailers (or a gRPC-Web trailer frame). */
function grpcStatus(trailers: Record<string, string | string[] | undefined>) {
  const bin = trailers["grpc-status-details-bin"];
  const status = typeof bin === "string" ? fromBinary(StatusSchema, Buffer.from(bin, "base64")) : undefined;
  const info = status?.details.map((d) => anyUnpack(d, ErrorInfoSchema)).find((i) => i !== undefined);
  return { code: Number(trailers["grpc-status"]), message: String(trailers["grpc-message"] ?? ""), info };
}

const parseTrailerFrame = (data: Buffer) =>
  Object.fromEntries(
    data
      .toString()
      .split("\r\n")
      .filter(Boolean)
      .map((l) => [l.slice(0, l.indexOf(":")).trim().toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]),
  );

/** The server's JSON log lines written after `mark` (an offset into its output). */
function logsSince(mark: number): Record<string, unknown>[] {
  return server
    .output()
    .slice(mark)
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function until<T>(fn: () => T | Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The `rpc` log lines of `procedure` since `mark`, waiting (bounded) until there are `n`. */
const rpcLines = (mark: number, procedure: string, n = 1) =>
  until(
    () => logsSince(mark).filter((l) => l.msg === "rpc" && l.procedure === procedure),
    (lines) => lines.length >= n,
  );

const errorLines = (mark: number) => logsSince(mark).filter((l) => Number(l.level) >= 50);

const CREATE_TENANT = "licensd.tenant.v1.TenantService/CreateTenant";
const TAIL = "licensd.audit.v1.AuditService/TailAuditEvents";
const REFLECTION = "grpc.reflection.v1.ServerReflection/ServerReflectionInfo";

/** Protobuf bytes no message decodes: a truncated varint, invalid UTF-8 in a string, 200,000 nested groups. */
const UNDECODABLE: [string, Buffer][] = [
  ["truncated", Buffer.from([0x08, 0xff, 0xff])],
  ["invalid UTF-8", Buffer.from([0x0a, 0x02, 0xc3, 0x28])],
  ["deep nesting", Buffer.alloc(200_000, 0x0b)],
];

async function tenantNames() {
  const res = await post("licensd.tenant.v1.TenantService/ListTenants", { pageSize: 1000 });
  return ((res.body.tenants ?? []) as { name: string }[]).map((t) => t.name);
}

describe("a request that cannot be decoded is INVALID_ARGUMENT with ErrorInfo, logged as a client's mistake", () => {
  it("Connect binary (curl)", async () => {
    const before = await tenantNames();
    const mark = server.output().length;
    for (const [name, bytes] of UNDECODABLE) {
      const res = await curl(`${server.url}/${CREATE_TENANT}`, bytes, [
        `authorization: Bearer ${server.superAdminKey}`,
        "content-type: application/proto",
      ]);
      expect(res.status, name).toBe(400);
      const body = JSON.parse(res.body.toString());
      expect(body.code, name).toBe("invalid_argument");
      expect(body.details[0]).toMatchObject({
        type: "google.rpc.ErrorInfo",
        debug: { reason: "MALFORMED_REQUEST", domain: "licensd.dev" },
      });
    }
    const lines = await rpcLines(mark, CREATE_TENANT, UNDECODABLE.length);
    expect(lines.map((l) => l.code)).toEqual(UNDECODABLE.map(() => "invalid_argument"));
    expect(errorLines(mark)).toEqual([]);
    expect(await tenantNames()).toEqual(before);
  });

  it("Connect JSON: syntax, wrong types, not an object, not UTF-8", async () => {
    const mark = server.output().length;
    const cases: [string, Buffer, Record<string, string>][] = [
      ["truncated", Buffer.from('{"name": '), {}],
      ["wrong type", Buffer.from('{"name": 5}'), { field: "name" }],
      ["array", Buffer.from("[]"), {}],
      ["not UTF-8", Buffer.from([...Buffer.from('{"name":"'), 0xc3, 0x28, ...Buffer.from('"}')]), {}],
    ];
    for (const [name, bytes, metadata] of cases) {
      const res = await curl(`${server.url}/${CREATE_TENANT}`, bytes, [
        `authorization: Bearer ${server.superAdminKey}`,
        "content-type: application/json",
      ]);
      const body = JSON.parse(res.body.toString());
      expect([res.status, body.code], name).toEqual([400, "invalid_argument"]);
      expect(body.details[0].debug, name).toMatchObject({
        reason: "MALFORMED_REQUEST",
        domain: "licensd.dev",
        ...(Object.keys(metadata).length ? { metadata } : {}),
      });
    }
    expect(errorLines(mark)).toEqual([]);
    expect(await tenantNames()).not.toContain("\ufffd");
  });

  it("gRPC (grpc-js sending bytes that do not decode)", async () => {
    const mark = server.output().length;
    const client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${server.superAdminKey}`);
    try {
      for (const [name, bytes] of UNDECODABLE) {
        const err = await new Promise<grpc.ServiceError>((resolve) =>
          client.makeUnaryRequest(
            `/${CREATE_TENANT}`,
            () => bytes,
            (b: Buffer) => b,
            {},
            md,
            (e) => resolve(e!),
          ),
        );
        expect(err.code, name).toBe(grpc.status.INVALID_ARGUMENT);
        const [bin] = err.metadata.get("grpc-status-details-bin") as Buffer[];
        const info = anyUnpack(fromBinary(StatusSchema, bin).details[0], ErrorInfoSchema);
        expect(info, name).toMatchObject({ reason: "MALFORMED_REQUEST", domain: "licensd.dev" });
      }
    } finally {
      client.close();
    }
    expect((await rpcLines(mark, CREATE_TENANT, 3)).map((l) => [l.protocol, l.code])).toEqual(
      UNDECODABLE.map(() => ["grpc", "invalid_argument"]),
    );
    expect(errorLines(mark)).toEqual([]);
  });

  it("gRPC frames: truncated, over the read limit, missing", async () => {
    const auth = { authorization: `Bearer ${server.superAdminKey}`, "content-type": "application/grpc" };
    const truncated = await h2(CREATE_TENANT, auth, Buffer.from([0, 0, 0, 0, 9, 0x0a, 0x01]));
    expect(grpcStatus(truncated.trailers)).toMatchObject({
      code: Code.InvalidArgument,
      info: { reason: "MALFORMED_REQUEST" },
    });
    const huge = await h2(CREATE_TENANT, auth, Buffer.from([0, 0x7f, 0, 0, 9, 0x0a, 0x01]));
    expect(grpcStatus(huge.trailers)).toMatchObject({
      code: Code.ResourceExhausted,
      info: { reason: "MESSAGE_TOO_LARGE", metadata: { limit_bytes: "4194304" } },
    });
    const none = await h2(CREATE_TENANT, auth, Buffer.alloc(0));
    expect(grpcStatus(none.trailers)).toMatchObject({
      code: Code.InvalidArgument,
      info: { reason: "MALFORMED_REQUEST" },
    });
  });

  it("gRPC-Web (curl over HTTP/1.1): the status in the trailer frame", async () => {
    const res = await curl(`${server.url}/${CREATE_TENANT}`, frame(UNDECODABLE[0][1]), [
      `authorization: Bearer ${server.superAdminKey}`,
      "content-type: application/grpc-web+proto",
    ]);
    const trailer = frames(res.body).find((f) => f.flags & 0x80)!;
    expect(grpcStatus(parseTrailerFrame(trailer.data))).toMatchObject({
      code: Code.InvalidArgument,
      info: { reason: "MALFORMED_REQUEST" },
    });
  });

  it("streams: a server stream's request (Connect), a bidi stream's message (gRPC), an unknown JSON field in a stream", async () => {
    const mark = server.output().length;
    const connect = await curl(`${server.url}/${TAIL}`, frame(UNDECODABLE[0][1]), [
      `authorization: Bearer ${server.superAdminKey}`,
      "content-type: application/connect+proto",
    ]);
    const end = JSON.parse(frames(connect.body).at(-1)!.data.toString());
    expect(end.error).toMatchObject({
      code: "invalid_argument",
      details: [{ debug: { reason: "MALFORMED_REQUEST" } }],
    });

    const json = await curl(`${server.url}/${TAIL}`, frame(Buffer.from(JSON.stringify({ tenantId, afterSek: "0" }))), [
      `authorization: Bearer ${server.superAdminKey}`,
      "content-type: application/connect+json",
    ]);
    const jsonEnd = JSON.parse(frames(json.body).at(-1)!.data.toString());
    expect(jsonEnd.error).toMatchObject({
      code: "invalid_argument",
      details: [{ debug: { reason: "UNKNOWN_FIELD", metadata: { field: "afterSek" } } }],
    });

    const client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
    const call = client.makeBidiStreamRequest(
      `/${REFLECTION}`,
      (b: Buffer) => b,
      (b: Buffer) => b,
    );
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      call.on("error", resolve);
      call.on("data", () => undefined);
      call.write(UNDECODABLE[1][1]);
    });
    client.close();
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    const lines = await rpcLines(mark, REFLECTION);
    expect(lines[0]).toMatchObject({ code: "invalid_argument" });
    expect(errorLines(mark)).toEqual([]);
  });
});

describe("unknown fields", () => {
  it("JSON naming a field the message does not have is refused, naming it; nothing is created", async () => {
    const res = await post(CREATE_TENANT, { name: "Typo Inc", floatng: true });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({
      code: "invalid_argument",
      details: [
        {
          type: "google.rpc.ErrorInfo",
          debug: { reason: "UNKNOWN_FIELD", domain: "licensd.dev", metadata: { field: "floatng" } },
        },
      ],
    });
    expect(res.body.message).toMatch(/^floatng: unknown field/);
    expect(await tenantNames()).not.toContain("Typo Inc");
  });

  it("binary requests with fields the server does not know are accepted (protobuf's forward compatibility)", async () => {
    const known = Buffer.from(
      toBinary(CreateTenantRequestSchema, create(CreateTenantRequestSchema, { name: "Newer Client Inc" })),
    );
    const unknownField = Buffer.from([0xf8, 0x06, 0x01]); // field 111, varint 1
    const res = await curl(`${server.url}/${CREATE_TENANT}`, Buffer.concat([known, unknownField]), [
      `authorization: Bearer ${server.superAdminKey}`,
      "content-type: application/proto",
    ]);
    expect(res.status).toBe(200);
    expect(await tenantNames()).toContain("Newer Client Inc");
  });
});

const ODD_SERVICE = "licensd: ünknown 100% \u{1F600}";
const ODD_MESSAGE = `unknown service ${JSON.stringify(ODD_SERVICE)}`;

describe("grpc-message reads the same in every client", () => {
  it("is written as the gRPC spec says: only bytes outside 0x20–0x7E and % escaped", async () => {
    const res = await h2(
      "grpc.health.v1.Health/Check",
      { "content-type": "application/grpc" },
      frame(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service: ODD_SERVICE }))),
    );
    expect(res.trailers["grpc-message"]).toBe('unknown service "licensd: %C3%BCnknown 100%25 %F0%9F%98%80"');
  });

  it("grpc-js", async () => {
    const client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      client.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        (m: MessageShape<typeof HealthCheckRequestSchema>) => Buffer.from(toBinary(HealthCheckRequestSchema, m)),
        (b: Buffer) => b,
        create(HealthCheckRequestSchema, { service: ODD_SERVICE }),
        (e) => resolve(e!),
      ),
    );
    client.close();
    expect([err.code, err.details]).toEqual([grpc.status.NOT_FOUND, ODD_MESSAGE]);
  });

  it("Python grpcio, which also decodes the ErrorInfo with types found through reflection (as grpcurl does)", async () => {
    const res = await run("/usr/bin/python3", [
      path.join(ROOT, "test/e2e/python_reflection.py"),
      `127.0.0.1:${server.port}`,
    ]);
    expect(res.code, res.stderr).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({
      code: "NOT_FOUND",
      message: ODD_MESSAGE,
      details: [{ type: "type.googleapis.com/google.rpc.ErrorInfo", reason: "NOT_FOUND", domain: "licensd.dev" }],
      unknown: [],
    });
  });

  it("buf curl and connect-es", async () => {
    const buf = await run(BUF, [
      "curl",
      "--http2-prior-knowledge",
      "--protocol",
      "grpc",
      "-d",
      JSON.stringify({ service: ODD_SERVICE }),
      `${server.url}/grpc.health.v1.Health/Check`,
    ]);
    expect(JSON.parse(buf.stderr)).toMatchObject({ code: "not_found", message: ODD_MESSAGE });
    const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    const err = await health.check({ service: ODD_SERVICE }).catch((e: unknown) => ConnectError.from(e));
    expect([(err as ConnectError).code, (err as ConnectError).rawMessage]).toEqual([Code.NotFound, ODD_MESSAGE]);
  });
});

/** A method of Google's grpc-web client, with protobuf-es doing the (de)serializing. */
const grpcWebMethod = <I extends DescMessage, O extends DescMessage>(name: string, kind: string, input: I, output: O) =>
  new grpcWeb.MethodDescriptor<MessageShape<I>, MessageShape<O>>(
    `/${name}`,
    kind,
    Object as never,
    Object as never,
    (m: MessageShape<I>) => toBinary(input, m),
    (b: Uint8Array) => fromBinary(output, b),
  );

describe("application/grpc-web-text, Google's grpc-web client's default mode", () => {
  const client = () => new grpcWeb.GrpcWebClientBase({ format: "text" });

  it("unary calls, answers and errors", async () => {
    const check = grpcWebMethod(
      "grpc.health.v1.Health/Check",
      grpcWeb.MethodType.UNARY,
      HealthCheckRequestSchema,
      HealthCheckResponseSchema,
    );
    expect(
      (
        await client().unaryCall(
          `${server.url}/grpc.health.v1.Health/Check`,
          create(HealthCheckRequestSchema),
          {},
          check,
        )
      ).status,
    ).toBe(1);
    const getTenant = grpcWebMethod(
      "licensd.tenant.v1.TenantService/GetTenant",
      grpcWeb.MethodType.UNARY,
      GetTenantRequestSchema,
      GetTenantResponseSchema,
    );
    const got = await client().unaryCall(
      `${server.url}/licensd.tenant.v1.TenantService/GetTenant`,
      create(GetTenantRequestSchema, { id: tenantId }),
      { authorization: `Bearer ${server.superAdminKey}` },
      getTenant,
    );
    expect(got.tenant?.id).toBe(tenantId);
    const err = await client()
      .unaryCall(
        `${server.url}/grpc.health.v1.Health/Check`,
        create(HealthCheckRequestSchema, { service: ODD_SERVICE }),
        {},
        check,
      )
      .catch((e: grpcWeb.RpcError) => e);
    expect([(err as grpcWeb.RpcError).code, (err as grpcWeb.RpcError).message]).toEqual([
      grpcWeb.StatusCode.NOT_FOUND,
      ODD_MESSAGE,
    ]);
  });

  it("a server stream: every event, then the status (DEADLINE_EXCEEDED: the deadline the client set passed)", async () => {
    const tail = grpcWebMethod(
      TAIL,
      grpcWeb.MethodType.SERVER_STREAMING,
      TailAuditEventsRequestSchema,
      TailAuditEventsResponseSchema,
    );
    const stream = client().serverStreaming(
      `${server.url}/${TAIL}`,
      create(TailAuditEventsRequestSchema, { tenantId, afterSeq: 0n }),
      { authorization: `Bearer ${server.superAdminKey}`, deadline: String(Date.now() + 3000) },
      tail,
    );
    const seqs: bigint[] = [];
    const status = await new Promise<grpcWeb.Status>((resolve) => {
      stream.on("data", (m) => {
        if (m.message.case === "event") seqs.push(m.message.value.seq);
      });
      stream.on("status", resolve);
      stream.on("error", () => undefined);
    });
    expect(seqs.length).toBeGreaterThanOrEqual(3); // the tenant's creation and two updates, at least
    expect(seqs).toEqual(seqs.map((_, i) => BigInt(i + 1)));
    expect(status.code).toBe(grpcWeb.StatusCode.DEADLINE_EXCEEDED);
  });

  it("by hand: a base64 request in padded pieces; the answer base64, frame by frame, trailers included", async () => {
    const message = toBinary(
      HealthCheckRequestSchema,
      create(HealthCheckRequestSchema, { service: "licensd.tenant.v1.TenantService" }),
    );
    const framed = frame(message);
    const body = framed.subarray(0, 5).toString("base64") + framed.subarray(5).toString("base64");
    expect(body.indexOf("=")).toBeLessThan(body.length - 2); // padding inside the body
    const res = await curl(`${server.url}/grpc.health.v1.Health/Check`, body, [
      "content-type: application/grpc-web-text",
      "accept: application/grpc-web-text",
    ]);
    expect(res.headers["content-type"]).toBe("application/grpc-web-text+proto");
    const text = res.body.toString();
    expect(text).toMatch(/^[A-Za-z0-9+/=]+$/);
    const segments = text.match(/[A-Za-z0-9+/]*(={1,2}|$)/g)!.filter(Boolean);
    const [answer, trailer] = frames(Buffer.concat(segments.map((s) => Buffer.from(s, "base64"))));
    expect(fromBinary(HealthCheckResponseSchema, answer.data).status).toBe(1);
    expect(trailer.flags).toBe(0x80);
    expect(parseTrailerFrame(trailer.data)).toMatchObject({ "grpc-status": "0" });
  });
});

describe("Cache-Control on Connect GET", () => {
  const get = (procedure: string, message: unknown, key?: string) =>
    fetch(`${server.url}/${procedure}?encoding=json&message=${encodeURIComponent(JSON.stringify(message))}`, {
      headers: key ? { authorization: `Bearer ${key}` } : {},
    });

  it("public signing keys are cacheable by anyone; signed validations, tenant data and errors are not stored", async () => {
    const keys = await get("licensd.activation.v1.ActivationService/GetSigningKeys", {});
    expect([keys.status, keys.headers.get("cache-control"), keys.headers.get("vary")]).toEqual([
      200,
      "public, max-age=60",
      "Accept-Encoding",
    ]);
    const validation = await get("licensd.licensing.v1.LicensingService/ValidateLicense", { key: "NOPE-AAAAA-BBBBB" });
    expect([validation.status, validation.headers.get("cache-control")]).toEqual([200, "no-store"]);
    const tenant = await get("licensd.tenant.v1.TenantService/GetTenant", { id: tenantId }, server.superAdminKey);
    expect([tenant.status, tenant.headers.get("cache-control")]).toEqual([200, "no-store"]);
    const missing = await get(
      "licensd.tenant.v1.TenantService/GetTenant",
      { id: "ten_00000000000000000000000000" },
      server.superAdminKey,
    );
    expect([missing.status, missing.headers.get("cache-control")]).toEqual([404, "no-store"]);
  });

  it("a GET whose message is not base64 is INVALID_ARGUMENT", async () => {
    const res = await fetch(
      `${server.url}/licensd.activation.v1.ActivationService/GetSigningKeys?encoding=proto&base64=1&message=%21%21%21`,
    );
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      code: "invalid_argument",
      details: [{ debug: { reason: "MALFORMED_REQUEST" } }],
    });
  });
});

describe("a stream the server ends because its deadline passed ends with DEADLINE_EXCEEDED", () => {
  const tailRequest = () => toBinary(TailAuditEventsRequestSchema, create(TailAuditEventsRequestSchema, { tenantId }));

  it("TailAuditEvents over Connect (connect-timeout-ms) and gRPC (grpc-timeout)", async () => {
    const connect = await curl(`${server.url}/${TAIL}`, frame(tailRequest()), [
      `authorization: Bearer ${server.superAdminKey}`,
      "content-type: application/connect+proto",
      "connect-timeout-ms: 300",
    ]);
    expect(JSON.parse(frames(connect.body).at(-1)!.data.toString()).error).toMatchObject({ code: "deadline_exceeded" });
    const viaGrpc = await h2(
      TAIL,
      { authorization: `Bearer ${server.superAdminKey}`, "content-type": "application/grpc", "grpc-timeout": "300m" },
      frame(tailRequest()),
    );
    expect(grpcStatus(viaGrpc.trailers).code).toBe(Code.DeadlineExceeded);
  });

  it("ConnectLease, with the client's side still open", async () => {
    const admin = (
      await post("licensd.tenant.v1.TenantService/CreateApiKey", {
        tenantId,
        name: "edge",
        scopes: ["API_KEY_SCOPE_ADMIN"],
      })
    ).body.secret as string;
    const call = async (procedure: string, body: unknown, key: string | null = admin) =>
      (await post(`licensd.licensing.v1.LicensingService/${procedure}`, body, key)).body as Record<
        string,
        { id: string }
      >;
    const product = await call("CreateProduct", { code: "EDG", name: "Edge App" });
    const policy = await call("CreatePolicy", { productId: product.product.id, name: "std" });
    const customer = await call("CreateCustomer", { name: "Ed", email: "ed@example.com" });
    const { key } = (await call("CreateLicense", {
      policyId: policy.policy.id,
      customerId: customer.customer.id,
    })) as unknown as { key: string };
    expect(
      (await post("licensd.activation.v1.ActivationService/Activate", { key, fingerprint: "edge-1" }, null)).status,
    ).toBe(200);

    const session = http2.connect(server.url);
    const req = session.request({
      ":method": "POST",
      ":path": "/licensd.activation.v1.ActivationService/ConnectLease",
      "content-type": "application/grpc",
      te: "trailers",
      "grpc-timeout": "700m",
    });
    req.write(
      frame(toBinary(ConnectLeaseRequestSchema, create(ConnectLeaseRequestSchema, { key, fingerprint: "edge-1" }))),
    );
    const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      req.on("trailers", resolve);
      req.on("data", () => undefined);
      req.on("error", reject);
    });
    session.close();
    expect(grpcStatus(trailers).code).toBe(Code.DeadlineExceeded);
  });
});

const LEASE = "licensd.activation.v1.ActivationService/ConnectLease";

/** A license key with a machine activated on it, for ConnectLease. */
async function leaseKey(code: string, fingerprint: string) {
  const { secret } = (
    await post("licensd.tenant.v1.TenantService/CreateApiKey", {
      tenantId,
      name: code,
      scopes: ["API_KEY_SCOPE_ADMIN"],
    })
  ).body as { secret: string };
  const call = async (procedure: string, body: unknown) =>
    (await post(`licensd.licensing.v1.LicensingService/${procedure}`, body, secret)).body as Record<
      string,
      { id: string }
    >;
  const product = await call("CreateProduct", { code, name: `${code} App` });
  const policy = await call("CreatePolicy", { productId: product.product.id, name: "std" });
  const customer = await call("CreateCustomer", { name: code, email: `${code.toLowerCase()}@example.com` });
  const { key } = (await call("CreateLicense", {
    policyId: policy.policy.id,
    customerId: customer.customer.id,
  })) as unknown as { key: string };
  expect((await post("licensd.activation.v1.ActivationService/Activate", { key, fingerprint }, null)).status).toBe(200);
  return key;
}

// ConnectLease's gRPC streams are served without connect-es's streaming pipeline (src/platform/lean-stream.ts);
// gRPC-Web still takes connect-es's. Whatever a client sends, both answer alike.
describe("ConnectLease over gRPC (the lean path) answers as connect-es does", () => {
  const leaseFrame = (msg: { key?: string; fingerprint?: string }) =>
    frame(toBinary(ConnectLeaseRequestSchema, create(ConnectLeaseRequestSchema, msg)));

  it("broken frames and bad messages: the same code, reason and message as over gRPC-Web, logged, no error line", async () => {
    const key = await leaseKey("LNB", "lean-1");
    const bodies: [string, Buffer][] = [
      ...UNDECODABLE.map(([name, bytes]): [string, Buffer] => [name, frame(bytes)]),
      ["compressed flag without an encoding", frame(Buffer.from([0x0a, 0x01, 0x41]), 1)],
      ["over the read limit", Buffer.from([0, 0x7f, 0, 0, 9, 0x0a, 0x01])],
      ["truncated", Buffer.from([0, 0, 0, 0, 9, 0x0a, 0x01])],
      ["no message", Buffer.alloc(0)],
      ["no key", leaseFrame({ fingerprint: "lean-1" })],
      ["a NUL in the fingerprint", leaseFrame({ key, fingerprint: "lean\u0000-1" })],
      ["a key nobody issued", leaseFrame({ key: "LNB-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-FFFFF-GGGGG", fingerprint: "x" })],
      ["a machine the license does not have", leaseFrame({ key, fingerprint: "nowhere" })],
    ];
    for (const [name, body] of bodies) {
      const mark = server.output().length;
      const lean = await h2(LEASE, { "content-type": "application/grpc" }, body);
      const web = await h2(LEASE, { "content-type": "application/grpc-web+proto" }, body);
      const leanStatus = grpcStatus({ ...lean.headers, ...lean.trailers });
      const webStatus = grpcStatus(parseTrailerFrame(frames(web.body).find((f) => f.flags & 0x80)!.data));
      expect({ name, ...leanStatus }).toEqual({ name, ...webStatus });
      // A stream whose client sends nothing and ends its side is done: OK, with no lease.
      expect(leanStatus.code === 0, name).toBe(name === "no message");
      expect(leanStatus.code, name).not.toBe(Code.Internal);
      if (leanStatus.code !== 0) expect(leanStatus.info?.reason, name).toBeTruthy();
      expect(lean.headers["x-request-id"] ?? lean.trailers["x-request-id"], name).toBeTruthy();
      const lines = await rpcLines(mark, LEASE, 2);
      expect(lines.map((l) => l.protocol).sort(), name).toEqual(["grpc", "grpc-web"]);
      expect(new Set(lines.map((l) => l.code)).size, name).toBe(1);
      expect(errorLines(mark), name).toEqual([]);
    }
  });

  it("leases, then the client's process exits: the stream is CANCELED at info, and nothing of it is left", async () => {
    const key = await leaseKey("LNC", "lean-2");
    const mark = server.output().length;
    const socket = net.connect(server.port, "127.0.0.1");
    const session = http2.connect(server.url, { createConnection: () => socket });
    session.on("error", () => undefined);
    const req = session.request({
      ":method": "POST",
      ":path": `/${LEASE}`,
      "content-type": "application/grpc",
      te: "trailers",
    });
    req.write(leaseFrame({ key, fingerprint: "lean-2" }));
    const [head, first] = await Promise.all([
      new Promise<http2.IncomingHttpHeaders>((resolve) => req.once("response", resolve)),
      new Promise<Buffer>((resolve) => req.once("data", resolve)),
    ]);
    expect(head["content-type"]).toBe("application/grpc+proto");
    expect(head["x-request-id"]).toBeTruthy();
    const lease = fromBinary(ConnectLeaseResponseSchema, first.subarray(5, 5 + first.readUInt32BE(1)));
    expect(lease.event.case).toBe("lease");
    // A second heartbeat on the same stream, fingerprint left out: another lease.
    req.write(leaseFrame({}));
    const second = await new Promise<Buffer>((resolve) => req.once("data", resolve));
    expect(fromBinary(ConnectLeaseResponseSchema, second.subarray(5)).event.case).toBe("lease");
    req.on("error", () => undefined);
    socket.destroy(); // as a client process that exits does
    const [line] = await rpcLines(mark, LEASE);
    expect(line).toMatchObject({ code: "canceled", protocol: "grpc", level: 30 });
    expect(errorLines(mark)).toEqual([]);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/licensd_rpc_in_flight(\{[^}]*\})? 0$/m);
  });
});

describe("a client hanging up is not a server error", () => {
  it("an HTTP/2 reflection stream whose connection is dropped mid-call is CANCELED, logged at info", async () => {
    const mark = server.output().length;
    const socket = net.connect(server.port, "127.0.0.1");
    const session = http2.connect(server.url, { createConnection: () => socket });
    session.on("error", () => undefined);
    const req = session.request({
      ":method": "POST",
      ":path": `/${REFLECTION}`,
      "content-type": "application/grpc",
      te: "trailers",
    });
    req.write(
      frame(
        toBinary(
          ServerReflectionRequestSchema,
          create(ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } }),
        ),
      ),
    );
    const first = await new Promise<Buffer>((resolve) => req.once("data", resolve));
    expect(fromBinary(ServerReflectionResponseSchema, first.subarray(5)).messageResponse.case).toBe(
      "listServicesResponse",
    );
    req.on("error", () => undefined);
    socket.destroy(); // as a client process that exits does
    const [line] = await rpcLines(mark, REFLECTION);
    expect(line).toMatchObject({ level: 30, code: "canceled" });
    expect(errorLines(mark)).toEqual([]);
  });

  it("an HTTP/1.1 Connect stream whose socket closes is CANCELED too", async () => {
    const mark = server.output().length;
    const socket = net.connect(server.port, "127.0.0.1");
    const body = frame(Buffer.from(JSON.stringify({ tenantId, afterSeq: "0" })));
    socket.write(
      `POST /${TAIL} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/connect+json\r\nauthorization: Bearer ${server.superAdminKey}\r\ncontent-length: ${body.length}\r\n\r\n`,
    );
    socket.write(body);
    await new Promise((resolve) => socket.once("data", resolve));
    socket.destroy();
    const [line] = await rpcLines(mark, TAIL);
    expect(line).toMatchObject({ code: "canceled" });
    expect(errorLines(mark)).toEqual([]);
  });
});

describe("the edge of HTTP itself", () => {
  it("a request without Host is 400, and the server lives on", async () => {
    const answer = await new Promise<string>((resolve) => {
      const socket = net.connect(server.port, "127.0.0.1", () =>
        socket.end(
          "POST /grpc.health.v1.Health/Check HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        ),
      );
      let text = "";
      socket.on("data", (d) => (text += d.toString()));
      socket.on("close", () => resolve(text));
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400/);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });

  it("metrics and logs spell codes as Connect does on the wire", async () => {
    const mark = server.output().length;
    expect(
      (await post("licensd.tenant.v1.TenantService/GetTenant", { id: "ten_00000000000000000000000000" })).status,
    ).toBe(404);
    expect((await post(CREATE_TENANT, { name: "" })).status).toBe(400);
    const codes = (await rpcLines(mark, "licensd.tenant.v1.TenantService/GetTenant")).map((l) => l.code);
    expect(codes).toEqual(["not_found"]);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toContain(
      'licensd_rpc_requests_total{procedure="licensd.tenant.v1.TenantService/GetTenant",code="not_found"}',
    );
    expect(metrics).toContain(
      'licensd_rpc_requests_total{procedure="licensd.tenant.v1.TenantService/CreateTenant",code="invalid_argument"}',
    );
    expect(metrics).toContain(
      'licensd_rpc_requests_total{procedure="licensd.tenant.v1.TenantService/CreateTenant",code="ok"}',
    );
    expect(metrics).not.toMatch(/code="[A-Z]/);
  });
});
