import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";

/**
 * The event log's tables are read and written only by src/events/ (README, "Who may import
 * whom"): every other file asks events/ (emit, event-log.ts, log-store.ts). This test looks
 * for the tables' names in the string and template literals of every other src/ file (SQL
 * text lives there; comments and identifiers don't count), migrations excepted.
 */

const ROOT = path.resolve(import.meta.dirname, "../..");
const SRC = path.join(ROOT, "src");
const LOG_TABLES = [
  "audit_events",
  "audit_heads",
  "audit_pending",
  "audit_tree_nodes",
  "audit_cuts",
  "audit_cut_signatures",
];
const LOG_TABLE = new RegExp(`\\b(${LOG_TABLES.join("|")})\\b`);
const OWNERS = ["events", "migrations"];

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const full = path.join(dir, d.name);
    if (d.isDirectory()) return tsFiles(full);
    return d.name.endsWith(".ts") ? [full] : [];
  });
}

/** `file:line: text` for each string or template literal of `source` that names a log table. */
function logTableUses(file: string, source: string): string[] {
  const sf = ts.createSourceFile(file, source, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const found: string[] = [];
  const visit = (node: ts.Node) => {
    if (
      (ts.isStringLiteral(node) ||
        ts.isNoSubstitutionTemplateLiteral(node) ||
        ts.isTemplateHead(node) ||
        ts.isTemplateMiddle(node) ||
        ts.isTemplateTail(node)) &&
      LOG_TABLE.test(node.text)
    ) {
      const { line } = sf.getLineAndCharacterOfPosition(node.getStart(sf));
      found.push(`${file}:${line + 1}: ${source.split("\n")[line].trim()}`);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return found;
}

describe("the event log's tables belong to src/events/", () => {
  it("finds a table named in SQL text, not in comments or identifiers", () => {
    // Written with #{…} for ${…} so the sample's template placeholders stay text here.
    const sample = [
      "// reads audit_events through events/",
      "/* audit_heads, audit_cuts */",
      "const audit_events = 1;",
      'const a = await sql(db, "select seq from audit_heads where tenant_id = $1", [t]);',
      "const b = await sql(db, `select #{cols} from audit_events e",
      "  left join audit_tree_nodes n on true where e.seq > #{n}`);",
      'const c = "audit_event"; // a resource name, not a table',
    ]
      .join("\n")
      .replaceAll("#{", "$" + "{");
    expect(logTableUses("sample.ts", sample)).toEqual([
      'sample.ts:4: const a = await sql(db, "select seq from audit_heads where tenant_id = $1", [t]);',
      "sample.ts:5: const b = await sql(db, `select $" + "{cols} from audit_events e",
    ]);
  });

  it("names every audit table the migrations create", () => {
    const created = new Set<string>();
    for (const file of tsFiles(path.join(SRC, "migrations"))) {
      for (const m of readFileSync(file, "utf8").matchAll(/create table (?:if not exists )?"?(audit_\w+)/gi)) {
        created.add(m[1]);
      }
    }
    expect([...created].sort()).toEqual([...LOG_TABLES].sort());
  });

  it("no file outside src/events/ and src/migrations/ runs SQL on them", () => {
    const uses = tsFiles(SRC)
      .filter((f) => !OWNERS.includes(path.relative(SRC, f).split(path.sep)[0]))
      .flatMap((f) => logTableUses(path.relative(ROOT, f), readFileSync(f, "utf8")));
    expect(uses, "the event log's tables are read and written only by src/events/ (log-store.ts)").toEqual([]);
  });
});
