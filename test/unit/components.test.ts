import { describe, expect, it } from "vitest";
import { componentsKey, componentsMatched, componentsNeeded } from "../../src/licensing/components.js";
import { checkedComponents } from "../../src/licensing/license-machines.js";

const c = (name: string, fingerprint = `${name}-fp`) => ({ name, fingerprint });

describe("components", () => {
  it("need 1, 2, more than half or all of the registered ones", () => {
    const table = [0, 1, 2, 3, 4, 5, 32].map((n) => [
      n,
      componentsNeeded("match_any", n),
      componentsNeeded("match_two", n),
      componentsNeeded("match_most", n),
      componentsNeeded("match_all", n),
    ]);
    expect(table).toEqual([
      [0, 1, 2, 1, 1],
      [1, 1, 2, 1, 1],
      [2, 1, 2, 2, 2],
      [3, 1, 2, 2, 3],
      [4, 1, 2, 3, 4],
      [5, 1, 2, 3, 5],
      [32, 1, 2, 17, 32],
    ]);
  });

  it("match by name and fingerprint both", () => {
    const registered = [c("board"), c("disk")];
    expect(componentsMatched(registered, [c("board"), c("disk")])).toBe(2);
    expect(componentsMatched(registered, [c("board"), c("disk", "other")])).toBe(1);
    expect(componentsMatched(registered, [{ name: "cpu", fingerprint: "board-fp" }])).toBe(0);
    expect(componentsMatched([], [c("board")])).toBe(0);
  });

  it("are checked for unique names and kept in name order", () => {
    expect(checkedComponents([c("disk"), c("board")])).toEqual([c("board"), c("disk")]);
    expect(() => checkedComponents([c("disk"), c("board"), c("disk", "x")])).toThrow(
      expect.objectContaining({
        reason: "INVALID_COMPONENTS",
        message: 'components[2].name: "disk" is given twice',
        metadata: { field: "components[2].name" },
      }),
    );
    expect(() => checkedComponents(Array.from({ length: 33 }, (_, i) => c(`c${i}`)))).toThrow(/at most 32/);
  });

  it("key a question by its components whatever their order", () => {
    expect(componentsKey(undefined)).toBe("");
    expect(componentsKey([])).toBe("");
    expect(componentsKey([c("disk"), c("board")])).toBe(componentsKey([c("board"), c("disk")]));
    expect(componentsKey([c("board", "a")])).not.toBe(componentsKey([c("board", "b")]));
  });
});
