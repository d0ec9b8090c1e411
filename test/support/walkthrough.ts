import { readFileSync } from "node:fs";

/**
 * The documentation's walkthroughs as one bash script: every ```sh block between
 * `<!-- walkthrough` and `<!-- /walkthrough -->` in the given markdown files, in order.
 * A `# → TEXT` line says what the command above it prints: TEXT is a whole output line
 * (leading and trailing blanks aside) where `…` stands for anything; consecutive `# →`
 * lines are output lines in that order, with other lines allowed between them.
 */
export interface Expectation {
  /** Where the `# →` line is, e.g. `README.md:123`. */
  at: string;
  text: string;
}

export interface Walkthrough {
  /** The blocks, in order, with an `echo` of a check marker where each group of `# →` lines starts. */
  script: string;
  /** Per check marker (index), the output lines expected before it. */
  checks: Expectation[][];
  /** Where each block starts (for reports). */
  blocks: string[];
}

export const checkMarker = (n: number) => `@@walkthrough check ${n}@@`;

export function extractWalkthrough(files: { name: string; path: string }[]): Walkthrough {
  const checks: Expectation[][] = [];
  const blocks: string[] = [];
  const parts: string[] = [];
  for (const file of files) {
    const lines = readFileSync(file.path, "utf8").split("\n");
    let inside = false;
    let block: string[] | undefined;
    let group: Expectation[] | undefined;
    lines.forEach((line, i) => {
      const at = `${file.name}:${i + 1}`;
      if (block === undefined) {
        if (line.startsWith("<!-- /walkthrough")) inside = false;
        else if (line.startsWith("<!-- walkthrough")) inside = true;
        else if (inside && line.trim() === "```sh") {
          block = [`# ${at}`];
          blocks.push(at);
        }
        return;
      }
      if (line.trim() === "```") {
        parts.push(block.join("\n"));
        block = undefined;
        group = undefined;
        return;
      }
      const expected = /^\s*# → ?(.*)$/.exec(line);
      if (expected) {
        if (!group) {
          group = [];
          checks.push(group);
          // A check marker at the first `# →` of a group: the output since the previous
          // marker is what the commands above printed.
          block.push(`echo '${checkMarker(checks.length - 1)}'`);
        }
        group.push({ at, text: expected[1]!.trim() });
      } else {
        group = undefined;
      }
      block.push(line);
    });
    if (block !== undefined) throw new Error(`${file.name}: a walkthrough sh block is not closed`);
  }
  return { script: parts.join("\n\n"), checks, blocks };
}

/** A `# →` text as a regular expression over one output line. */
export function lineMatcher(text: string): RegExp {
  const parts = text.split("…").map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`^\\s*${parts.join(".*")}\\s*$`);
}

/**
 * Checks the script's output against its expectations; returns one message per unmet
 * expectation (empty when all are met), each with the output it was checked against.
 */
export function checkOutput(walkthrough: Walkthrough, output: string): string[] {
  const problems: string[] = [];
  let from = 0;
  walkthrough.checks.forEach((group, n) => {
    const marker = output.indexOf(checkMarker(n), from);
    if (marker < 0) {
      problems.push(`${group[0]!.at}: the walkthrough stopped before this check`);
      return;
    }
    const segment = output.slice(from, marker).split("\n");
    from = marker + checkMarker(n).length;
    let i = 0;
    for (const e of group) {
      const re = lineMatcher(e.text);
      while (i < segment.length && !re.test(segment[i]!)) i++;
      if (i === segment.length) {
        problems.push(
          `${e.at}: expected a line like\n    ${e.text}\n  in what the commands above it printed:\n${segment.map((l) => `    | ${l}`).join("\n")}`,
        );
        return;
      }
      i++;
    }
  });
  return problems;
}
