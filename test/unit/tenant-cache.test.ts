import { describe, expect, it } from "vitest";
import { TenantCache, type TenantChanges } from "../../src/platform/tenant-cache.js";

/** A clock tests move (lru-cache treats a start time of 0 as "no age", so it starts later). */
function clock() {
  let ms = 1_000;
  return { now: () => ms, advance: (by: number) => (ms += by) };
}

/** A feed the test drives by hand. */
function changes() {
  const entry: ((tenantId: string) => void)[] = [];
  const reconnect: (() => void)[] = [];
  const feed: TenantChanges = { onEntry: (l) => entry.push(l), onReconnect: (l) => reconnect.push(l) };
  return {
    feed,
    entry: (t: string) => {
      for (const l of entry) l(t);
    },
    reconnect: () => {
      for (const l of reconnect) l();
    },
  };
}

describe("TenantCache", () => {
  it("keeps at most `max` entries, dropping the least recently used, and its index forgets what was evicted", () => {
    const cache = new TenantCache<number>({ max: 3, ttlMs: 60_000 });
    cache.set("a", "ten_1", 1);
    cache.set("b", "ten_1", 2);
    cache.set("c", "ten_2", 3);
    expect(cache.get("a")).toBe(1); // a is now the most recently used
    cache.set("d", "ten_2", 4);
    expect(cache.size).toBe(3);
    expect(cache.get("b")).toBeUndefined();
    expect([cache.get("a"), cache.get("c"), cache.get("d")]).toEqual([1, 3, 4]);
    expect(cache.indexedKeys("ten_1")).toBe(1);
    expect(cache.indexedKeys("ten_2")).toBe(2);
  });

  it("serves an entry for ttlMs by the injected clock, then no more, and its index forgets it", () => {
    const time = clock();
    const cache = new TenantCache<string>({ max: 10, ttlMs: 30_000, now: time.now });
    cache.set("k", "ten_1", "v");
    time.advance(29_999);
    expect(cache.get("k")).toBe("v");
    time.advance(2);
    expect(cache.get("k")).toBeUndefined();
    expect(cache.size).toBe(0);
    expect(cache.indexedKeys("ten_1")).toBe(0);
  });

  it("invalidating a tenant drops its entries and the unowned ones, and leaves the other tenants' alone", () => {
    const cache = new TenantCache<string | null>({ max: 100, ttlMs: 60_000 });
    cache.set("a1", "ten_a", "A1");
    cache.set("a2", "ten_a", "A2");
    cache.set("b1", "ten_b", "B1");
    cache.set("miss", null, null);
    cache.invalidate("ten_a");
    expect([cache.get("a1"), cache.get("a2"), cache.get("miss")]).toEqual([undefined, undefined, undefined]);
    expect(cache.get("b1")).toBe("B1");
    expect([cache.indexedKeys("ten_a"), cache.indexedKeys(null), cache.indexedKeys("ten_b")]).toEqual([0, 0, 1]);
    cache.invalidate("ten_c"); // a tenant with nothing cached: nothing else goes
    expect(cache.get("b1")).toBe("B1");
  });

  it("moves a key between tenants when it is set again, so only its current owner's change drops it", () => {
    const cache = new TenantCache<string>({ max: 10, ttlMs: 60_000 });
    cache.set("k", "ten_a", "old");
    cache.set("k", "ten_b", "new");
    expect([cache.indexedKeys("ten_a"), cache.indexedKeys("ten_b")]).toEqual([0, 1]);
    cache.invalidate("ten_a");
    expect(cache.get("k")).toBe("new");
    cache.set("k", "ten_b", "newer"); // same owner again: still indexed once
    expect(cache.indexedKeys("ten_b")).toBe(1);
    cache.delete("k");
    expect(cache.indexedKeys("ten_b")).toBe(0);
  });

  it("does not store a load that overlapped an invalidation", () => {
    const cache = new TenantCache<string>({ max: 10, ttlMs: 60_000 });
    const before = cache.stamp();
    cache.invalidate("ten_b"); // any tenant: the load's tenant is not known before it is read
    cache.set("k", "ten_a", "stale", before);
    expect(cache.get("k")).toBeUndefined();
    cache.set("k", "ten_a", "fresh", cache.stamp());
    expect(cache.get("k")).toBe("fresh");
  });

  it("follows a feed: a tenant's entry drops that tenant's entries, a reconnect drops all", () => {
    const feed = changes();
    const cache = new TenantCache<number>({ max: 10, ttlMs: 60_000 }).follow(feed.feed);
    cache.set("a", "ten_a", 1);
    cache.set("b", "ten_b", 2);
    feed.entry("ten_a");
    expect([cache.get("a"), cache.get("b")]).toEqual([undefined, 2]);
    feed.reconnect();
    expect(cache.size).toBe(0);
    expect(cache.indexedKeys("ten_b")).toBe(0);
  });
});
