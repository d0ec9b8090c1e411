/* How the components a validation gives are matched against those its machine registered (ValidateLicense). */
import type { ComponentMatchingStrategy } from "./entitlements.js";
import type { Component } from "./license-machines.js";

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
