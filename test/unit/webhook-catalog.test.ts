/*
 * Keeps three lists the same: the event types the code emits (src/), EVENT_CATALOG (what
 * an endpoint may subscribe to) and the catalog of docs/webhooks.md (one example body per
 * type). The e2e test checks the examples' payload keys against real deliveries.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { EVENT_CATALOG } from "../../src/webhooks/catalog.js";
import { type DocExample, docExamples, docSections } from "../support/webhook-docs.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const SRC = path.join(ROOT, "src");
const CATALOG_FILE = "src/webhooks/catalog.ts";

/** A string that names an event type: a domain, a dot, lowercase words. */
const EVENT_LITERAL =
  /^(tenant|product|policy|customer|license|machine|process|meter|usage|anomaly|audit|webhook|payment_source|payment|email_template)\.[a-z_.]+$/;

/**
 * Literals that look like event types in files that emit, and are not: each with where
 * and why. A new one means either a new event type (add it to EVENT_CATALOG and the docs)
 * or a new entry here.
 */
const NOT_EVENT_TYPES: Record<string, string> = {
  "tenant.name": "tenant.service.ts: the field named in an INVALID_ARGUMENT error",
};

/** Until the webhooks service emits, its own types are catalogued ahead of the code. */
const WEBHOOK_ENDPOINT = "webhook.endpoint.";
const WEBHOOK_TEST = "webhook.test";

interface Scanned {
  file: string;
  /** Whether the file calls `emit(…)` or `x.emit(…)` (events.emit or a helper named emit). */
  callsEmit: boolean;
  /** Every event-type-looking string literal (comments excluded), with its line. */
  literals: { value: string; line: number }[];
}

/** One TypeScript source, parsed (so comments and regexes are not mistaken for strings). */
function scan(file: string, text: string): Scanned {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const out: Scanned = { file, callsEmit: false, literals: [] };
  const visit = (node: ts.Node) => {
    if (ts.isCallExpression(node)) {
      const callee = node.expression;
      if (
        (ts.isIdentifier(callee) && callee.text === "emit") ||
        (ts.isPropertyAccessExpression(callee) && callee.name.text === "emit")
      )
        out.callsEmit = true;
    }
    if ((ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) && EVENT_LITERAL.test(node.text)) {
      const line = source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;
      out.literals.push({ value: node.text, line });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return out;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(".ts") && !e.name.endsWith(".d.ts"))
    .map((e) => path.relative(ROOT, path.join(e.parentPath, e.name)))
    .sort();
}

/** Event type → where it is used, over the files that emit. */
function emittedTypes(files: Scanned[]): Map<string, string[]> {
  const types = new Map<string, string[]>();
  for (const f of files) {
    if (!f.callsEmit) continue;
    for (const { value, line } of f.literals) {
      if (value in NOT_EVENT_TYPES) continue;
      types.set(value, [...(types.get(value) ?? []), `${f.file}:${line}`]);
    }
  }
  return types;
}

const scanned = sourceFiles(SRC)
  .filter((f) => f !== CATALOG_FILE)
  .map((f) => scan(f, readFileSync(path.join(ROOT, f), "utf8")));
const emitted = emittedTypes(scanned);
const catalogTypes = Object.keys(EVENT_CATALOG);
/** src/webhooks/ beyond the catalog: the server side of webhooks, once it exists. */
const webhookServer = scanned.filter((f) => f.file.startsWith("src/webhooks/"));

describe("the scan of src/ for emitted event types", () => {
  it("finds types passed straight to events.emit and through the services' helpers", () => {
    // events.emit({ type: … }), license.service's change(…), catalog.service's and
    // meter.service's emit(…), machine.service's remove(…).
    for (const type of [
      "tenant.created",
      "license.created",
      "license.suspended",
      "license.renewed",
      "product.created",
      "customer.deleted",
      "meter.updated",
      "machine.deleted",
      "machine.deactivated",
      "usage.limit_exceeded",
    ])
      expect(emitted.get(type), type).toBeDefined();
    expect(emitted.get("license.suspended")).toEqual([expect.stringMatching(/^src\/licensing\/license\.service\.ts:/)]);
  });

  it("reads literals from files that emit, not comments nor files that do not emit", () => {
    const files = [
      scan(
        "a.ts",
        [
          "// license.commented is only a comment",
          "/* license.blocked too */",
          "const change = (type: string) => events.emit(em, { type, payload: {} });",
          'change("license.helped");',
          "const re = /license.regex/;",
          'await events.emit(em, { type: "machine.direct" });',
          "const t = `usage.templated`;",
          'throw invalidArgument("tenant.name", "must not be empty");',
        ].join("\n"),
      ),
      scan("b.ts", 'export const REASONS = { "license.elsewhere": 1 };'),
    ];
    expect([...emittedTypes(files).keys()].sort()).toEqual(["license.helped", "machine.direct", "usage.templated"]);
    expect(emittedTypes(files).get("license.helped")).toEqual(["a.ts:4"]);
  });

  it("has no stale exceptions: each literal excused as not an event type is still in src/", () => {
    const all = new Set(scanned.flatMap((f) => f.literals.map((l) => l.value)));
    expect(Object.keys(NOT_EVENT_TYPES).filter((t) => !all.has(t))).toEqual([]);
  });
});

describe("EVENT_CATALOG", () => {
  it("lists every event type emitted in src/", () => {
    const missing = [...emitted]
      .filter(([type]) => !(type in EVENT_CATALOG))
      .map(([type, where]) => `${type} (emitted at ${where.join(", ")}): add it to EVENT_CATALOG and docs/webhooks.md`);
    expect(missing).toEqual([]);
  });

  it("lists only types the code emits (the webhooks service's own once it exists)", () => {
    const serverEmits = webhookServer.some((f) => f.callsEmit);
    const serverLiterals = new Set(webhookServer.flatMap((f) => f.literals.map((l) => l.value)));
    const unused = catalogTypes.filter((type) => {
      if (type === WEBHOOK_TEST) return webhookServer.length > 0 && !serverLiterals.has(type);
      if (type.startsWith(WEBHOOK_ENDPOINT) && !serverEmits) return false; // not written yet
      return !emitted.has(type);
    });
    expect(unused.map((t) => `${t}: in EVENT_CATALOG, emitted nowhere in src/`)).toEqual([]);
  });
});

describe("docs/webhooks.md's event catalog", () => {
  const sections = docSections();
  // Built here rather than by docExamples (which throws on the first problem) so that each test names its own.
  const examples = new Map(sections.filter((s) => s.examples.length > 0).map((s) => [s.type, s.examples[0]]));

  it("has one section with one json example body for every catalog type, and no other", () => {
    const counts = new Map<string, number>();
    for (const s of sections) counts.set(s.type, (counts.get(s.type) ?? 0) + 1);
    const problems = [
      ...catalogTypes.filter((t) => counts.get(t) !== 1).map((t) => `${t}: ${counts.get(t) ?? 0} sections`),
      ...[...counts.keys()].filter((t) => !(t in EVENT_CATALOG)).map((t) => `${t}: documented, not in EVENT_CATALOG`),
      ...sections.filter((s) => s.examples.length !== 1).map((s) => `${s.type}: ${s.examples.length} json blocks`),
    ];
    expect(problems).toEqual([]);
    expect([...docExamples().keys()].sort()).toEqual([...catalogTypes].sort());
  });

  it("describes each type as EVENT_CATALOG does", () => {
    const differing = sections
      .filter((s) => s.type in EVENT_CATALOG && !s.description.startsWith(EVENT_CATALOG[s.type]!))
      .map((s) => `${s.type}: "${s.description.slice(0, 80)}…" should start with "${EVENT_CATALOG[s.type]}"`);
    expect(differing).toEqual([]);
  });

  it.each(catalogTypes)("%s: a complete delivery body of that type", (type) => {
    const body = examples.get(type) as DocExample | undefined;
    if (!body) expect.fail(`${type} has no example in docs/webhooks.md`);
    expect(Object.keys(body).sort()).toEqual(["data", "timestamp", "type"]);
    expect(body.type).toBe(type);
    expect(body.timestamp).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    expect(new Date(body.timestamp).toISOString()).toBe(body.timestamp);
    expect(Object.keys(body.data).sort()).toEqual(["actor", "id", "payload", "seq", "subject", "tenant_id"]);
    expect(body.data.id).toMatch(/^evt_[0-9a-z]{26}$/);
    expect(body.data.tenant_id).toMatch(/^ten_[0-9a-z]{26}$/);
    expect(body.data.subject).toMatch(/^[a-z]+_[0-9a-z]{26}$/);
    expect(body.data.actor).toMatch(
      /^(super_admin|system|key:key_[0-9a-z]{26}|license:lic_[0-9a-z]{26}|payment:psrc_[0-9a-z]{26})$/,
    );
    expect(Number.isInteger(body.data.seq)).toBe(true);
    // webhook.test is not in the audit log: seq 0; every logged event has seq ≥ 1.
    if (type === WEBHOOK_TEST) expect(body.data.seq).toBe(0);
    else expect(body.data.seq).toBeGreaterThan(0);
    expect(typeof body.data.payload).toBe("object");
    expect(Array.isArray(body.data.payload)).toBe(false);
  });

  it("shows no secret: no API key, webhook secret or license key, no field named like one", () => {
    const leaks: string[] = [];
    const fieldNames = (v: unknown): string[] =>
      v && typeof v === "object" ? Object.entries(v).flatMap(([k, x]) => [k, ...fieldNames(x)]) : [];
    for (const [type, body] of examples as Map<string, DocExample>) {
      const text = JSON.stringify(body);
      // An API key's shown prefix (tenant.api_key.created: `lsk_` and 8 characters) is not a secret; a whole key is.
      if (/lsk_[A-Za-z0-9_-]{9,}/.test(text)) leaks.push(`${type}: an API key`);
      if (text.includes("whsec_")) leaks.push(`${type}: a webhook secret`);
      if (/[A-Z0-9]{3}(-[A-Z2-7]{5}){2,}/.test(text)) leaks.push(`${type}: a license key`);
      for (const name of fieldNames(body.data.payload))
        if (/^(key|secret|license_key|api_key|password|token)$/i.test(name)) leaks.push(`${type}: a field ${name}`);
    }
    expect(leaks).toEqual([]);
  });

  it("is read strictly: a type documented twice or without its example is an error", () => {
    const doc = (body: string) => `# Webhooks\n\n## Event catalog\n\n${body}\n## Next\n`;
    const example = '```json\n{"type": "license.created"}\n```\n';
    expect(docExamples(doc(`### \`license.created\`\n\nx\n\n${example}`)).size).toBe(1);
    expect(() =>
      docExamples(doc(`### \`license.created\`\n\n${example}\n### \`license.created\`\n\n${example}`)),
    ).toThrow(/documented twice/);
    expect(() => docExamples(doc("### `license.created`\n\nno example\n"))).toThrow(/0 json examples/);
    expect(() => docExamples(doc("### `license.created`\n\n```json\n{nope\n```\n"))).toThrow(/does not parse/);
  });
});
