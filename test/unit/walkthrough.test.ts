import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { checkMarker, checkOutput, extractWalkthrough, lineMatcher } from "../support/walkthrough.js";

// The checker test/e2e/walkthrough.test.ts relies on: it must fail when the docs and the
// output disagree, or the walkthrough test could never fail.
const doc = [
  "# Title",
  "```sh",
  "echo not run: outside the markers",
  "```",
  "<!-- walkthrough: … -->",
  "Prose.",
  "```sh",
  'echo \'{"id":"ten_1","name":"A"}\'',
  '# → {"id":"ten_…","name":"A"}',
  "echo one; echo two; echo three",
  "# → one",
  "# → three",
  "```",
  "```json",
  '{"not": "run"}',
  "```",
  "<!-- /walkthrough -->",
  "```sh",
  "echo not run either",
  "```",
].join("\n");

function walkthroughOf(text: string) {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), "licensd-walk-unit-")), "doc.md");
  writeFileSync(file, text);
  return extractWalkthrough([{ name: "doc.md", path: file }]);
}

describe("walkthrough extraction and checks", () => {
  it("takes only the sh blocks between the markers, with a check marker where each group of # → lines starts", () => {
    const w = walkthroughOf(doc);
    expect(w.blocks).toEqual(["doc.md:7"]);
    expect(w.script).not.toContain("not run");
    expect(w.checks).toEqual([
      [{ at: "doc.md:9", text: '{"id":"ten_…","name":"A"}' }],
      [
        { at: "doc.md:11", text: "one" },
        { at: "doc.md:12", text: "three" },
      ],
    ]);
    expect(w.script.split("\n").filter((l) => l.includes("@@walkthrough"))).toEqual([
      `echo '${checkMarker(0)}'`,
      `echo '${checkMarker(1)}'`,
    ]);
  });

  it("accepts output where every expected line appears, in order, in its command's output", () => {
    const w = walkthroughOf(doc);
    const output = `{"id":"ten_01abc","name":"A"}\n${checkMarker(0)}\none\ntwo\nthree\n${checkMarker(1)}\n`;
    expect(checkOutput(w, output)).toEqual([]);
  });

  it("refuses a changed value, a line out of order, a line printed by another command, and a run that stopped early", () => {
    const w = walkthroughOf(doc);
    expect(
      checkOutput(w, `{"id":"ten_01abc","name":"B"}\n${checkMarker(0)}\none\nthree\n${checkMarker(1)}\n`)[0],
    ).toMatch(/^doc\.md:9: expected a line like/);
    expect(
      checkOutput(w, `{"id":"ten_01abc","name":"A"}\n${checkMarker(0)}\nthree\none\n${checkMarker(1)}\n`)[0],
    ).toMatch(/^doc\.md:12:/);
    expect(
      checkOutput(w, `{"id":"ten_01abc","name":"A"}\none\n${checkMarker(0)}\nthree\n${checkMarker(1)}\n`)[0],
    ).toMatch(/^doc\.md:11:/);
    expect(checkOutput(w, `{"id":"ten_01abc","name":"A"}\n${checkMarker(0)}\none\n`)).toEqual([
      "doc.md:11: the walkthrough stopped before this check",
    ]);
  });

  it("reads … as anything and the rest literally, over whole lines", () => {
    expect(lineMatcher('{"a":1,…}').test('  {"a":1,"b":[2]}  ')).toBe(true);
    expect(lineMatcher('{"a":1,…}').test('x{"a":1,"b":2}')).toBe(false);
    expect(lineMatcher("a.c").test("abc")).toBe(false);
    expect(lineMatcher("(x)*").test("(x)*")).toBe(true);
  });
});
