import {
  create,
  toBinary,
  toJson,
  type DescMessage,
  type DescMethod,
  type DescMethodStreaming,
  type DescMethodUnary,
  type JsonValue,
} from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import type { Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { licensdServices } from "../../src/connect.js";
import { startServer, type ServerProcess } from "../support/server.js";
import { mutateJson, jsonMutationArb, type Json, type JsonMutation } from "../support/fuzz/json.js";
import { binaryBodyArb, FRAME_CASES, grpcFrames, jsonBodyArb } from "../support/fuzz/garbage.js";
import { plausibleArb, requestArb, streamArb, type Init } from "../support/fuzz/requests.js";
import { describeLine, ServerLog } from "../support/fuzz/server-log.js";
import { CLIENT_CODES, connectGetRaw, connectUnaryRaw, outcomeOf, RawH2, type Outcome } from "../support/fuzz/wire.js";
import { CREDENTIALS, World, type Credential } from "../support/fuzz/world.js";

/**
 * THE fuzz suite: requests for every RPC of licensd's services, generated from the
 * proto descriptors, over Connect JSON (POST and GET), Connect binary and gRPC, with
 * every kind of credential. Every call must end OK or with a code a client's mistake
 * deserves (never INTERNAL, UNKNOWN, UNAVAILABLE), the server must stay healthy and
 * log nothing at error level.
 *
 *   LICENSD_FUZZ_RUNS     runs per RPC and protocol (default 10; `npm run fuzz` uses 200)
 *   LICENSD_FUZZ_SEED     base seed (printed on failure with the path to replay)
 *   LICENSD_FUZZ_PATH     replay one counterexample (with LICENSD_FUZZ_SEED and LICENSD_FUZZ_ONLY)
 *   LICENSD_FUZZ_ONLY     run only the properties whose name (`<Service>/<Method> <protocol>`) this regex matches
 *   LICENSD_FUZZ_SHRINK   1: shrink a counterexample (slower)
 *   LICENSD_FUZZ_STATS    1: print how each RPC answered (to see how deep the calls got)
 *   LICENSD_FUZZ_SURVEY   1: do not stop at a failure; print every distinct one at the end
 *                         (but stop at one whose description matches LICENSD_FUZZ_STOP_AT)
 */
const RUNS = Number(process.env.LICENSD_FUZZ_RUNS ?? 10);
const BASE_SEED =
  process.env.LICENSD_FUZZ_SEED !== undefined
    ? Number(process.env.LICENSD_FUZZ_SEED)
    : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
const REPLAY_PATH = process.env.LICENSD_FUZZ_PATH;
const ONLY = process.env.LICENSD_FUZZ_ONLY ? new RegExp(process.env.LICENSD_FUZZ_ONLY) : undefined;
const SHRINK = process.env.LICENSD_FUZZ_SHRINK === "1";
const STATS = process.env.LICENSD_FUZZ_STATS === "1";
const SURVEY = process.env.LICENSD_FUZZ_SURVEY === "1";
const surveyed = new Map<string, { n: number; example: string }>();
const STOP_AT = process.env.LICENSD_FUZZ_STOP_AT ? new RegExp(process.env.LICENSD_FUZZ_STOP_AT) : undefined;
const answers = new Map<string, Map<string, number>>();

type Protocol = "connect-json" | "connect-binary" | "grpc";
const PROTOCOLS: Protocol[] = ["connect-json", "connect-binary", "grpc"];

let server: ServerProcess & { dropDatabase(): Promise<void> };
let log: ServerLog;
let world: World;
let transports: Record<Protocol | "connect-json-h2", Transport>;
let barrierCount = 0;
let startupOutput = "";
/** Where the last sample's log check ended. */
let lastMark = 0;

beforeAll(async () => {
  server = await startServer({
    // Rate limits (activations, failed key lookups, custom key collisions) would answer most
    // fuzzed calls RESOURCE_EXHAUSTED, from one address, before any deeper code ran.
    env: {
      LICENSD_ACTIVATION_RATE_PER_IP: "0",
      LICENSD_ACTIVATION_RATE_PER_LICENSE: "0",
      LICENSD_KEY_FAILURE_RATE_PER_IP: "0",
      LICENSD_KEY_COLLISION_RATE_PER_TENANT: "0",
      LICENSD_LOG_LEVEL: "info",
      LICENSD_AUDIT_KEEPALIVE_MS: "100",
      // Fuzzed webhook URLs are never sent to: the one allowed host is a loopback address,
      // which is refused too (no LICENSD_WEBHOOK_ALLOW_PRIVATE). Nothing leaves the machine.
      LICENSD_WEBHOOK_ALLOWED_HOSTS: "127.0.0.1",
    },
  });
  log = new ServerLog(server.child);
  startupOutput = server.output();
  const baseUrl = server.url;
  // A client's own HTTP/2 session refuses streams (ENHANCE_YOUR_CALM) once it buffers more
  // than maxSessionMemory (10 MB by default): fuzzed messages of 20 MB must reach the server.
  const nodeOptions = { maxSessionMemory: 256 };
  transports = {
    "connect-json": createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
    "connect-json-h2": createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: false, nodeOptions }),
    "connect-binary": createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true, nodeOptions }),
    grpc: createGrpcTransport({ baseUrl, nodeOptions }),
  };
  world = await World.create(baseUrl, server.superAdminKey);
  console.log(`fuzz: base seed ${BASE_SEED}, ${RUNS} runs per RPC and protocol`);
});

afterAll(async () => {
  if (STATS)
    for (const [rpc, codes] of answers) console.log(`${rpc}: ${[...codes].map(([c, n]) => `${c} ${n}`).join(", ")}`);
  if (SURVEY)
    console.log(`fuzz survey:\n${[...surveyed].map(([k, v]) => `  ${v.n}× ${k}\n      e.g. ${v.example}`).join("\n")}`);
  // Lines after the last call's barrier belong to no call: still none may be an error.
  const mark = lastMark;
  expect(await barrier()).toBeUndefined();
  const late = log.errorsSince(mark).map(describeLine);
  expect(await server?.stop()).toBe(0);
  await server?.dropDatabase();
  // Startup lines were written before the log watcher attached: check them too.
  const early = startupOutput.split("\n").filter((l) => /"level":(5|6)\d/.test(l));
  expect(early, "error-level lines at startup").toEqual([]);
  expect(late, "error-level lines after the last call").toEqual([]);
});

/** A credential for a fuzzed call: tenant keys and the super-admin most often, so calls get past auth. */
const credentialArb: fc.Arbitrary<Credential> = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom<Credential>("a_admin", "super_admin") },
  { weight: 3, arbitrary: fc.constantFrom<Credential>(...CREDENTIALS) },
);

/** Health check through the whole interceptor chain; its log line proves every earlier line was read. */
async function barrier(): Promise<string | undefined> {
  const id = `fuzz-barrier-${++barrierCount}`;
  let status = 0;
  try {
    const res = await fetch(`${server.url}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": id },
      body: "{}",
    });
    status = res.status;
    const body = (await res.json()) as { status?: string };
    if (body.status !== "SERVING") return `health check answered ${JSON.stringify(body)}`;
  } catch (err) {
    return `health check failed (HTTP ${status}): ${(err as Error).message}`;
  }
  if (!(await log.barrier(id))) return "the health check's log line never came";
  return undefined;
}

interface Sample {
  credential: Credential;
  messages: Init[];
  json: JsonMutation[];
  get: boolean;
}

const sampleArb = (method: DescMethod): fc.Arbitrary<Sample> =>
  fc.record({
    credential: credentialArb,
    messages:
      method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming"
        ? streamArb(method, world)
        : requestArb(method, world).map((m) => [m]),
    json: fc.oneof(
      { weight: 5, arbitrary: fc.constant<JsonMutation[]>([]) },
      { weight: 2, arbitrary: fc.array(jsonMutationArb, { minLength: 1, maxLength: 2 }) },
    ),
    get: fc.boolean(),
  });

/** The JSON a client would send, or undefined when the message has no JSON form (e.g. a timestamp past year 9999). */
function jsonOf(schema: DescMessage, init: Init): JsonValue | undefined {
  try {
    return toJson(schema, create(schema, init));
  } catch {
    return undefined;
  }
}

async function send(method: DescMethod, protocol: Protocol, s: Sample): Promise<Outcome | "skip"> {
  const headers = world.headers[s.credential];
  const schema = method.input;
  for (const m of s.messages) toBinary(schema, create(schema, m)); // a generator bug must throw here, not pass as a server answer
  if (method.methodKind === "unary") {
    const unary = method as DescMethodUnary;
    if (protocol === "connect-json") {
      const json = jsonOf(schema, s.messages[0]);
      if (json === undefined) return "skip";
      const body = JSON.stringify(
        mutateJson(
          json as Json,
          s.json,
          schema.fields.map((f) => f.jsonName),
        ),
      );
      const procedure = `${method.parent.typeName}/${method.name}`;
      const query = `connect=v1&encoding=json&message=${encodeURIComponent(body)}`;
      // Node's HTTP parser refuses request lines past 16 KiB (431) before licensd sees them;
      // clients send bigger messages by POST.
      if (s.get && method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS && query.length < 8192) {
        return connectGetRaw(server.url, procedure, query, headers);
      }
      return connectUnaryRaw(server.url, procedure, body, { contentType: "application/json", headers });
    }
    try {
      await transports[protocol].unary(unary, undefined, 20_000, headers, s.messages[0]);
      return { code: "ok", message: "" };
    } catch (err) {
      return outcomeOf(err);
    }
  }
  if (
    protocol === "connect-json" &&
    s.messages
      .slice(0, method.methodKind === "server_streaming" ? 1 : undefined)
      .some((m) => jsonOf(schema, m) === undefined)
  )
    return "skip";
  const transport = transports[protocol === "connect-json" ? "connect-json-h2" : protocol];
  const serverStreaming = method.methodKind === "server_streaming";
  const ac = new AbortController();
  // A tail runs until the client leaves: leave after a moment. Other streams must end by themselves.
  const timer = setTimeout(() => ac.abort(), serverStreaming ? 150 : 15_000);
  try {
    const messages = serverStreaming ? s.messages.slice(0, 1) : s.messages;
    const input = (async function* () {
      for (const m of messages) yield m;
    })();
    const res = await transport.stream(method as DescMethodStreaming, ac.signal, undefined, headers, input);
    for await (const _ of res.message) {
      // reading every answer is the point
    }
    return { code: "ok", message: "" };
  } catch (err) {
    if (ac.signal.aborted)
      return serverStreaming
        ? { code: "ok", message: "" }
        : { code: "no answer (hung)", message: "the stream did not end within 15 s" };
    return outcomeOf(err);
  } finally {
    clearTimeout(timer);
  }
}

/** A counterexample with long strings, lists and maps cut short, so it stays readable. */
function shorten(value: unknown): string {
  const cut = (v: unknown, depth = 0): unknown => {
    if (typeof v === "string") return v.length > 80 ? `${v.slice(0, 60)}…(${v.length} chars)` : v;
    if (depth > 8) return "…";
    if (Array.isArray(v))
      return v.length > 6
        ? [...v.slice(0, 3).map((x) => cut(x, depth + 1)), `…(${v.length} items)`]
        : v.map((x) => cut(x, depth + 1));
    if (v instanceof Uint8Array) return v.length > 32 ? `bytes(${v.length})` : v;
    if (v !== null && typeof v === "object" && (v as { kind?: unknown }).kind === "rpc")
      return procedureOf(v as DescMethod);
    if (v !== null && typeof v === "object") {
      const entries = Object.entries(v);
      const kept = entries.slice(0, 12).map(([k, x]) => [cut(k) as string, cut(x, depth + 1)]);
      if (entries.length > 12) kept.push(["…", `${entries.length} keys`]);
      return Object.fromEntries(kept);
    }
    return v;
  };
  return fc.stringify(cut(value)).slice(0, 6000);
}

/**
 * The verdict on one call, after it: its answer is a client code (or `accept`ed), the
 * server answers a health check, and it logged nothing at error level meanwhile.
 */
async function judge(property: string, mark: number, outcome: Outcome, sample: unknown, accepted = false) {
  const problems: string[] = [];
  if (!CLIENT_CODES.has(outcome.code) && !accepted) problems.push(`answered ${outcome.code}: ${outcome.message}`);
  const dead = await barrier();
  if (dead) problems.push(`server not healthy after the call: ${dead}`);
  const errors = log.errorsSince(mark).map(describeLine);
  lastMark = log.mark();
  problems.push(...errors.map((e) => `logged ${e}`));
  if (problems.length === 0) return;
  if (SURVEY && !STOP_AT?.test(problems.join("\n"))) return survey(property, outcome, errors, shorten(sample));
  throw new Error(problems.join("\n"));
}

/** Runs one property, and on failure says how to replay it. */
async function check<T>(
  name: string,
  testName: string,
  arb: fc.Arbitrary<T>,
  runs: number,
  seed: number,
  run: (t: T) => Promise<void>,
) {
  const result = await fc.check(fc.asyncProperty(arb, run), {
    numRuns: runs,
    seed: REPLAY_PATH ? BASE_SEED : seed,
    path: REPLAY_PATH,
    endOnFailure: !SHRINK,
  });
  if (!result.failed) return;
  throw new Error(
    [
      `${name} failed after ${result.numRuns} run(s): ${result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance)}`,
      `request: ${result.counterexample ? shorten(result.counterexample[0]) : "(none)"}`,
      `replay (after npm run build): LICENSD_FUZZ_SEED=${result.seed} LICENSD_FUZZ_PATH=${result.counterexamplePath} LICENSD_FUZZ_ONLY='^${name}$' npx vitest run test/e2e/fuzz.test.ts -t '${testName}'`,
    ].join("\n"),
  );
}

async function fuzz(method: DescMethod, protocol: Protocol, index: number) {
  const rpc = `${method.parent.name}/${method.name}`;
  const name = `${rpc} ${protocol}`;
  if (ONLY && !ONLY.test(name)) return;
  await check(name, rpc, sampleArb(method), RUNS, (BASE_SEED + index * 7919) | 0, async (s) => {
    const mark = log.mark();
    const outcome = await send(method, protocol, s);
    if (outcome === "skip") return;
    if (STATS) {
      const codes = answers.get(rpc) ?? new Map<string, number>();
      codes.set(outcome.code, (codes.get(outcome.code) ?? 0) + 1);
      answers.set(rpc, codes);
    }
    await judge(name, mark, outcome, s);
  });
}

describe("fuzzed requests to every RPC", () => {
  let index = 0;
  let dirty = false;
  for (const service of licensdServices) {
    for (const method of service.methods) {
      const base = index;
      index += PROTOCOLS.length;
      it(`${service.name}/${method.name}`, async () => {
        // What fuzzed calls delete, revoke or suspend is rebuilt before the next RPC's turn.
        if (dirty) await world.refresh();
        dirty = /^(Delete|Revoke|Suspend|Transfer|Deactivate|Update|Renew|Import|Resolve)/.test(method.name);
        for (const [i, protocol] of PROTOCOLS.entries()) await fuzz(method, protocol, base + i);
      }, 600_000);
    }
  }
});

/** One garbage case: a call whose answer must be a client code, with the server healthy and quiet after it. */
async function garbageProperty<T>(
  name: string,
  arb: fc.Arbitrary<T>,
  send: (t: T) => Promise<Outcome>,
  runs: number,
  accept: (o: Outcome, t: T) => boolean = () => false,
) {
  if (ONLY && !ONLY.test(name)) return;
  await check(name, "garbage", arb, runs, (BASE_SEED ^ hash(name)) | 0, async (t) => {
    const mark = log.mark();
    const outcome = await send(t);
    await judge(name, mark, outcome, t, accept(outcome, t));
  });
}

function survey(property: string, outcome: Outcome, errors: string[], request: string) {
  const signature = `${property}: ${outcome.code} ${outcome.message.replace(/[0-9a-f-]{36}/g, "…").slice(0, 100)} | ${(errors[0] ?? "").slice(0, 160)}`;
  const s = surveyed.get(signature) ?? { n: 0, example: request.slice(0, 300) };
  s.n++;
  surveyed.set(signature, s);
}

function hash(text: string): number {
  let h = 0;
  for (const c of text) h = (Math.imul(h, 31) + c.charCodeAt(0)) | 0;
  return h;
}

const allMethods = () => licensdServices.flatMap((s) => s.methods);
const procedureOf = (m: DescMethod) => `${m.parent.typeName}/${m.name}`;
/** A method, a credential and a real request of that method (a seed for the garbage). */
const seededArb = (methods: DescMethod[]) =>
  fc.constantFrom(...methods).chain((method) =>
    fc.record({
      method: fc.constant(method),
      credential: credentialArb,
      seed: plausibleArb(method, world).map((m) => toBinary(method.input, create(method.input, m))),
    }),
  );
const GARBAGE_RUNS = RUNS * 12;
/** An audit tail that accepted its request streams until the client leaves. */
const openFor = (m: DescMethod) => (m.methodKind === "server_streaming" ? 1000 : undefined);

describe("garbage on the wire", () => {
  let h2: RawH2;
  beforeAll(() => {
    h2 = new RawH2(server.url);
  });
  afterAll(() => h2?.close());

  it("Connect binary: bodies that are not protobuf, to every unary RPC", async () => {
    const unary = allMethods().filter((m) => m.methodKind === "unary");
    const arb = seededArb(unary).chain((s) => binaryBodyArb(s.seed).map((body) => ({ ...s, body })));
    await garbageProperty(
      "connect-binary bodies",
      arb,
      (t) =>
        connectUnaryRaw(server.url, procedureOf(t.method), t.body.bytes, {
          contentType: "application/proto",
          headers: world.headers[t.credential],
        }),
      GARBAGE_RUNS,
    );
  }, 600_000);

  it("Connect JSON: bodies that are not a request, to every unary RPC", async () => {
    const unary = allMethods().filter((m) => m.methodKind === "unary");
    const arb = fc.record({ method: fc.constantFrom(...unary), credential: credentialArb, body: jsonBodyArb });
    await garbageProperty(
      "connect-json bodies",
      arb,
      (t) =>
        connectUnaryRaw(server.url, procedureOf(t.method), t.body.text, {
          contentType: "application/json",
          headers: world.headers[t.credential],
        }),
      GARBAGE_RUNS,
    );
  }, 600_000);

  it("Connect GET: queries that are not a request, to every read", async () => {
    const reads = allMethods().filter(
      (m) => m.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS && m.methodKind === "unary",
    );
    const query = fc.oneof(
      fc.constantFrom(
        "",
        "encoding=json",
        "message=%7B%7D",
        "encoding=xml&message=x",
        "encoding=json&message=%7B",
        "encoding=proto&base64=1&message=%%%",
        "encoding=proto&message=%FF%FF",
        "encoding=json&compression=gzip&message=abc",
        "connect=v2&encoding=json&message=%7B%7D",
        "encoding=json&message=%7B%7D&message=%7B%7D",
      ),
      fc
        .uint8Array({ maxLength: 40 })
        .map((b) => `encoding=proto&base64=1&message=${Buffer.from(b).toString("base64url")}`),
      fc.string({ maxLength: 30 }).map((t) => `encoding=json&message=${encodeURIComponent(t)}`),
    );
    const arb = fc.record({ method: fc.constantFrom(...reads), credential: credentialArb, query });
    // An encoding the server does not speak is refused by HTTP status 415, as the Connect protocol says.
    const unsupported = (o: Outcome, t: { query: string }) =>
      o.code.startsWith("http 415") && !/(^|&)encoding=(json|proto)(&|$)/.test(t.query);
    await garbageProperty(
      "connect-get queries",
      arb,
      (t) => connectGetRaw(server.url, procedureOf(t.method), t.query, world.headers[t.credential]),
      GARBAGE_RUNS,
      unsupported,
    );
  }, 600_000);

  it("gRPC: broken frames to every RPC, unary and streaming", async () => {
    const arb = seededArb(allMethods()).chain((s) =>
      fc
        .record({ case: fc.constantFrom(...FRAME_CASES), junk: fc.uint8Array({ minLength: 1, maxLength: 32 }) })
        .map((g) => ({ ...s, ...g })),
    );
    await garbageProperty(
      "grpc frames",
      arb,
      (t) => {
        const { chunks, headers } = grpcFrames(t.case, t.seed, t.junk);
        return h2.grpc(
          procedureOf(t.method),
          chunks,
          { ...world.headers[t.credential], ...headers },
          { openMs: openFor(t.method) },
        );
      },
      GARBAGE_RUNS,
    );
  }, 600_000);

  it("Connect streaming: broken envelopes to every streaming RPC", async () => {
    const streams = allMethods().filter((m) => m.methodKind !== "unary");
    const arb = seededArb(streams).chain((s) =>
      fc
        .record({ case: fc.constantFrom(...FRAME_CASES), junk: fc.uint8Array({ minLength: 1, maxLength: 32 }) })
        .map((g) => ({ ...s, ...g })),
    );
    await garbageProperty(
      "connect-stream envelopes",
      arb,
      (t) => {
        const { chunks, headers } = grpcFrames(t.case, t.seed, t.junk);
        const connectHeaders = Object.fromEntries(
          Object.entries(headers).map(([k, v]) => [k === "grpc-encoding" ? "connect-content-encoding" : k, v]),
        );
        return h2.connectStream(
          procedureOf(t.method),
          chunks,
          { ...world.headers[t.credential], ...connectHeaders },
          { openMs: openFor(t.method) },
        );
      },
      GARBAGE_RUNS,
    );
  }, 600_000);
});
