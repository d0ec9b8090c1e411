import { describe, expect, it } from "vitest";
import { streamOrder } from "../../src/usage/stream-order.js";

/** Whether a promise has settled, after everything queued so far ran. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => (done = true));
  await new Promise((r) => setImmediate(r));
  return done;
}

const keys = (...ks: string[]) => new Map([["ten_a", new Set(ks)]]);
const adds = (entries: Record<string, bigint>) => new Map(Object.entries(entries));

describe("a stream's order", () => {
  it("tells each batch what the unfinished batches before it may still add, and forgets a batch once it finished", async () => {
    const next = streamOrder();
    const [one, two, three] = [next(), next(), next()];
    expect(one.admit(keys("k1"), adds({ g: 5n, h: 1n })).pending).toEqual(new Map());
    await two.admitted;
    // (only for the totals it adds to itself)
    expect(two.admit(keys("k2"), adds({ g: 7n })).pending).toEqual(adds({ g: 5n }));
    one.finish();
    await three.admitted;
    expect(three.admit(keys("k3"), adds({ g: 1n, h: 2n })).pending).toEqual(adds({ g: 7n }));
  });

  it("says when a batch repeats a key of an unfinished batch before it, and only then", async () => {
    const next = streamOrder();
    const [one, two, three, four] = [next(), next(), next(), next()];
    expect(one.admit(keys("a", "b"), new Map()).overlaps).toBe(false);
    expect(two.admit(keys("c"), new Map()).overlaps).toBe(false);
    expect(three.admit(keys("x", "b"), new Map()).overlaps).toBe(true);
    one.finish();
    three.finish();
    expect(four.admit(keys("a", "b"), new Map()).overlaps).toBe(false);
    // another tenant's key of the same name is another key
    const five = next();
    expect(five.admit(new Map([["ten_b", new Set(["c"])]]), new Map()).overlaps).toBe(false);
  });

  it("lets a batch's stage through only once every batch before it passed it or finished, even one that finished out of order", async () => {
    const next = streamOrder();
    const [one, two, three] = [next(), next(), next()];
    expect(await settled(one.keys.wait)).toBe(true);
    two.finish(); // the second batch took the one-statement path and finished first
    expect(await settled(three.keys.wait)).toBe(false);
    expect(await settled(three.limits.wait)).toBe(false);
    one.keys.done();
    expect(await settled(three.keys.wait)).toBe(true);
    expect(await settled(three.limits.wait)).toBe(false);
    one.finish();
    expect(await settled(three.limits.wait)).toBe(true);
  });

  it("admits a batch after the one before it registered, or finished without registering (a batch that failed early)", async () => {
    const next = streamOrder();
    const [one, two, three] = [next(), next(), next()];
    expect(await settled(two.admitted)).toBe(false);
    one.finish();
    expect(await settled(two.admitted)).toBe(true);
    expect(await settled(three.admitted)).toBe(false);
    two.admit(keys("k"), new Map());
    expect(await settled(three.admitted)).toBe(true);
  });
});
