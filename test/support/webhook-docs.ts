/*
 * The event catalog of docs/webhooks.md, read back for tests: under "## Event catalog",
 * each event type is a heading `### \`<type>\`` followed by its description and one
 * ```json block, a complete delivery body. The unit test keeps the docs and EVENT_CATALOG
 * the same; the e2e test compares the examples' payload keys with real deliveries.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const WEBHOOKS_DOC = fileURLToPath(new URL("../../docs/webhooks.md", import.meta.url));

const CATALOG_HEADING = "## Event catalog";
const TYPE_HEADING = /^### `([^`]+)`\s*$/;

/** A delivery body as documented (and as sent). */
export interface DocExample {
  type: string;
  timestamp: string;
  data: {
    id: string;
    tenant_id: string;
    seq: number;
    subject: string;
    actor: string;
    payload: Record<string, unknown>;
  };
}

/** One `### \`<type>\`` section of the catalog: its prose and its parsed ```json blocks. */
export interface DocSection {
  type: string;
  /** 1-based line of the heading in docs/webhooks.md. */
  line: number;
  /** The text outside code blocks, lines joined by single spaces. */
  description: string;
  examples: unknown[];
}

/** Every type section of the catalog, in document order (repeats included, so a test can name them). */
export function docSections(markdown: string = readFileSync(WEBHOOKS_DOC, "utf8")): DocSection[] {
  const lines = markdown.split("\n");
  const start = lines.findIndex((l) => l.trim() === CATALOG_HEADING);
  if (start < 0) throw new Error(`docs/webhooks.md has no "${CATALOG_HEADING}" section`);
  const sections: DocSection[] = [];
  let section: DocSection | undefined;
  let prose: string[] = [];
  let block: string[] | undefined;
  let blockIsJson = false;
  let blockLine = 0;
  const close = () => {
    if (section) section.description = prose.join(" ").replace(/\s+/g, " ").trim();
    prose = [];
  };
  for (let i = start + 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (block) {
      if (line.trim() === "```") {
        if (blockIsJson && section) {
          try {
            section.examples.push(JSON.parse(block.join("\n")));
          } catch (err) {
            throw new Error(`docs/webhooks.md:${blockLine}: the json block of ${section.type} does not parse: ${err}`);
          }
        }
        block = undefined;
      } else block.push(line);
      continue;
    }
    if (line.startsWith("```")) {
      block = [];
      blockIsJson = line.trim() === "```json";
      blockLine = i + 1;
      continue;
    }
    if (/^##? /.test(line)) break; // the next top-level section ends the catalog
    const heading = TYPE_HEADING.exec(line);
    if (heading) {
      close();
      section = { type: heading[1]!, line: i + 1, description: "", examples: [] };
      sections.push(section);
    } else if (section) prose.push(line);
  }
  if (block) throw new Error(`docs/webhooks.md:${blockLine}: a code block is not closed`);
  close();
  return sections;
}

/**
 * The documented example body of each event type. Throws when a type has no example,
 * several, or several sections: the docs must give exactly one body per type.
 */
export function docExamples(markdown?: string): Map<string, DocExample> {
  const examples = new Map<string, DocExample>();
  for (const s of docSections(markdown)) {
    if (examples.has(s.type)) throw new Error(`docs/webhooks.md:${s.line}: ${s.type} is documented twice`);
    if (s.examples.length !== 1)
      throw new Error(`docs/webhooks.md:${s.line}: ${s.type} has ${s.examples.length} json examples, not 1`);
    examples.set(s.type, s.examples[0] as DocExample);
  }
  return examples;
}
