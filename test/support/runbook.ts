import { mkdtempSync, readFileSync, writeFileSync, chmodSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ROOT, run } from "./server.js";

/**
 * The runbooks of docs/operations.md, read the way an operator reads them, so a drill runs each procedure exactly as
 * written. A procedure is a `## ` section whose heading is followed by `<!-- drill: <id> -->`. Its steps are marked
 * `<!-- step: <name> -->`; the ```sh blocks that follow a marker (up to the next marker or heading) are the step's
 * commands. A step with no ```sh block is one the operator does by hand (restart an instance, say): the drill does it.
 * ```console / ```text blocks are examples of output and are never run.
 */
export interface RunbookStep {
  name: string;
  /** The step's shell commands, in document order ("" for a step done by hand). */
  script: string;
  /** 1-based line of the step's marker in docs/operations.md. */
  line: number;
}

export const OPERATIONS = path.join(ROOT, "docs/operations.md");

export function readRunbook(id: string, file = OPERATIONS): { title: string; steps: RunbookStep[] } {
  const lines = readFileSync(file, "utf8").split("\n");
  const start = lines.findIndex((l) => l.trim() === `<!-- drill: ${id} -->`);
  if (start < 0) throw new Error(`${path.relative(ROOT, file)} has no runbook marked <!-- drill: ${id} -->`);
  const heading = lines.slice(0, start).findLastIndex((l) => l.startsWith("## "));
  const title = heading >= 0 ? lines[heading]!.slice(3).trim() : id;
  const steps: RunbookStep[] = [];
  let fence: string[] | undefined;
  for (let i = start + 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (fence) {
      if (line.trim() === "```") {
        const step = steps.at(-1);
        if (!step) throw new Error(`runbook ${id}: a sh block at line ${i + 1} before any <!-- step: … -->`);
        step.script += `${step.script ? "\n" : ""}${fence.join("\n")}`;
        fence = undefined;
      } else fence.push(line);
      continue;
    }
    if (line.startsWith("## ")) break;
    const marker = /^<!-- step: ([a-z0-9-]+) -->$/.exec(line.trim());
    if (marker) steps.push({ name: marker[1]!, script: "", line: i + 1 });
    else if (/^```(sh|bash)\s*$/.test(line.trim())) fence = [];
    else if (line.trim().startsWith("```")) {
      // Output examples: skip to the closing fence.
      while (i + 1 < lines.length && lines[i + 1]!.trim() !== "```") i++;
      i++;
    }
  }
  if (steps.length === 0) throw new Error(`runbook ${id} has no <!-- step: … --> markers`);
  return { title, steps };
}

export interface StepResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a runbook's steps in the order the document gives them. `step(name, done?)` runs the next step, which must be
 * `name` (so a drill cannot skip or reorder the document): its commands with `bash -euo pipefail`, then `done` (what
 * the drill does for a step done by hand, or its checks). `finish()` fails if a step was never run.
 */
export class Runbook {
  readonly title: string;
  readonly steps: RunbookStep[];
  private next = 0;
  readonly bin: string;

  constructor(
    readonly id: string,
    /** The environment every step sees, on top of PATH (which has `licensd` and PostgreSQL's client tools). */
    public env: Record<string, string>,
    readonly cwd = mkdtempSync(path.join(os.tmpdir(), `licensd-drill-${id}-`)),
  ) {
    ({ title: this.title, steps: this.steps } = readRunbook(id));
    // `licensd` as an operator has it after `npm install -g`: the CLI on the Node it needs.
    this.bin = mkdtempSync(path.join(os.tmpdir(), "licensd-drill-bin-"));
    const shim = path.join(this.bin, "licensd");
    writeFileSync(
      shim,
      `#!/usr/bin/env bash\nexec bash ${JSON.stringify(path.join(ROOT, "scripts/with-node.sh"))} node ${JSON.stringify(
        path.join(ROOT, "bin/licensd.js"),
      )} "$@"\n`,
    );
    chmodSync(shim, 0o755);
  }

  async step(name: string, done?: (result: StepResult) => Promise<void> | void): Promise<StepResult> {
    const step = this.steps[this.next];
    if (!step) throw new Error(`runbook ${this.id}: the drill runs step ${name}, but the document has no more steps`);
    if (step.name !== name)
      throw new Error(`runbook ${this.id}: the drill runs step ${name}, the document's next step is ${step.name}`);
    this.next++;
    let result: StepResult = { code: 0, stdout: "", stderr: "" };
    if (step.script) {
      result = await run("bash", ["--noprofile", "--norc", "-euo", "pipefail", "-c", step.script], {
        cwd: this.cwd,
        env: {
          ...this.env,
          PATH: `${this.bin}:/usr/lib/postgresql/15/bin:${process.env.PATH}`,
        },
      });
      if (result.code !== 0)
        throw new Error(
          `runbook ${this.id}, step ${name} (docs/operations.md:${step.line}) failed with status ${result.code}:\n` +
            `$ ${step.script}\n${result.stdout}${result.stderr}`,
        );
    }
    await done?.(result);
    return result;
  }

  /** Fails when the drill ended before the document did. */
  finish(): void {
    const left = this.steps.slice(this.next).map((s) => s.name);
    if (left.length > 0) throw new Error(`runbook ${this.id}: steps never run: ${left.join(", ")}`);
  }
}
