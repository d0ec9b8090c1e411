import { LRUCache } from "lru-cache";

/** What tells a cache that a tenant's data changed (the event feed, as app.ts provides it). */
export interface TenantChanges {
  /** Calls `listener` after every committed change of a tenant, on any instance. */
  onEntry(listener: (tenantId: string) => void): void;
  /** Calls `listener` when changes may have been missed (the feed reconnected). */
  onReconnect(listener: () => void): void;
}

export interface TenantCacheOptions {
  /** Entries kept; past this, the least recently used goes. */
  max: number;
  /** How long an entry is served, in ms: the backstop should a change not be heard of. */
  ttlMs: number;
  /** The time in ms (tests move it); performance.now by default. */
  now?: () => number;
}

interface Entry<V> {
  value: V;
  tenantId: string | null;
}

/**
 * A per-instance cache of what a tenant's data says, bounded in size (LRU) and age, that
 * drops a tenant's entries when that tenant changes. An index from tenant to keys makes
 * that touch only the tenant's entries. Entries no tenant owns (a miss: "no license has
 * this key") are dropped on every tenant's change, since any change may make them wrong.
 */
export class TenantCache<V> {
  private readonly entries: LRUCache<string, Entry<V>>;
  private readonly keysOf = new Map<string | null, Set<string>>();
  // Bumped on every invalidation: a load that overlapped one does not store what it read.
  private generation = 0;

  constructor(options: TenantCacheOptions) {
    this.entries = new LRUCache<string, Entry<V>>({
      // Bounded by count through maxSize, not max: with max, lru-cache allocates its arrays for `max` entries
      // up front (about 1.9 MB for 50,000, per cache, before the first entry); these grow with what is held.
      maxSize: options.max,
      sizeCalculation: () => 1,
      ttl: options.ttlMs,
      // Ages are read at most once a second (a second more or less on a backstop of many); an
      // injected clock is read on every check.
      ...(options.now ? { perf: { now: options.now }, ttlResolution: 0 } : { ttlResolution: 1000 }),
      // Evicted, expired, replaced or deleted: the index forgets the key.
      dispose: (entry, key) => {
        const keys = this.keysOf.get(entry.tenantId);
        if (!keys) return;
        keys.delete(key);
        if (keys.size === 0) this.keysOf.delete(entry.tenantId);
      },
    });
  }

  /** Drops a tenant's entries on every change of it, and everything when changes may have been missed. */
  follow(changes: TenantChanges): this {
    changes.onEntry((tenantId) => this.invalidate(tenantId));
    changes.onReconnect(() => this.clear());
    return this;
  }

  get(key: string): V | undefined {
    return this.entries.get(key)?.value;
  }

  /** Taken before a load: `set` with it stores nothing if an invalidation came in between. */
  stamp(): number {
    return this.generation;
  }

  /** Stores `value` as `tenantId`'s (null: no tenant's, dropped on any change), unless `stamp` is outdated. */
  set(key: string, tenantId: string | null, value: V, stamp = this.generation): void {
    if (stamp !== this.generation) return;
    this.entries.set(key, { value, tenantId });
    let keys = this.keysOf.get(tenantId);
    if (!keys) {
      keys = new Set();
      this.keysOf.set(tenantId, keys);
    }
    keys.add(key);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  /** Drops `tenantId`'s entries and those no tenant owns; nothing else is looked at. */
  invalidate(tenantId: string): void {
    this.generation++;
    for (const owner of [tenantId, null]) {
      const keys = this.keysOf.get(owner);
      if (!keys) continue;
      this.keysOf.delete(owner);
      for (const key of keys) this.entries.delete(key);
    }
  }

  clear(): void {
    this.generation++;
    this.entries.clear();
    this.keysOf.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  /** How many keys the tenant index holds for `tenantId` (tests check it is cleaned). */
  indexedKeys(tenantId: string | null): number {
    return this.keysOf.get(tenantId)?.size ?? 0;
  }
}
