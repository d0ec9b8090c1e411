import { invalidArgument } from "../platform/errors.js";
import type { ComponentMatchingStrategy } from "./entitlements.js";

/** A hardware component of a machine (board, disk, CPU…), known by a fingerprint the SDK computes. */
export interface Component {
  name: string;
  fingerprint: string;
}

/** Components a request may give: as many as a machine may register. */
export const MAX_COMPONENTS = 32;

/**
 * The components a request gives, checked beyond the protovalidate rules (which say each one's name and
 * fingerprint): names unique. INVALID_ARGUMENT naming `field` otherwise. Returned in name order, as stored.
 */
export function checkedComponents(components: readonly Component[], field = "components"): Component[] {
  if (components.length > MAX_COMPONENTS)
    throw invalidArgument(field, `at most ${MAX_COMPONENTS} components`, "INVALID_COMPONENTS");
  const seen = new Set<string>();
  for (const [i, c] of components.entries()) {
    if (seen.has(c.name))
      throw invalidArgument(`${field}[${i}].name`, `${JSON.stringify(c.name)} is given twice`, "INVALID_COMPONENTS");
    seen.add(c.name);
  }
  return components
    .map((c) => ({ name: c.name, fingerprint: c.fingerprint }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * How many of a machine's `registered` components a validation's must match under `strategy`: MATCH_ANY one,
 * MATCH_TWO two (so a machine that registered fewer never matches, as with Keygen), MATCH_MOST more than half,
 * MATCH_ALL all. At least one, so a machine that registered none matches nothing.
 */
export function componentsNeeded(strategy: ComponentMatchingStrategy, registered: number): number {
  switch (strategy) {
    case "match_two":
      return 2;
    case "match_most":
      return Math.floor(registered / 2) + 1;
    case "match_all":
      return Math.max(1, registered);
    default:
      return 1;
  }
}

/** How many of `given` match one of `registered`: same name and same fingerprint. */
export function componentsMatched(registered: readonly Component[], given: readonly Component[]): number {
  const byName = new Map(registered.map((c) => [c.name, c.fingerprint]));
  return given.filter((c) => byName.get(c.name) === c.fingerprint).length;
}

/** The components of a question as one text, in name order, for cache keys (names and fingerprints hold no NUL). */
export const componentsKey = (components: readonly Component[] | undefined): string =>
  components === undefined || components.length === 0
    ? ""
    : [...components]
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
        .map((c) => `${c.name}\u0002${c.fingerprint}`)
        .join("\u0001");
