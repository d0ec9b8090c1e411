/*
 * The order a stream's concurrent batches keep. A batch on the general path writes its
 * keys, and takes its limit locks, after every batch before it did (or finished). A
 * batch on the one-statement path does not wait: it registers, in stream order, its keys
 * and what it may add to each period total, and checks its limits as if every unfinished
 * batch before it had already added all it may. When that still leaves it clear of every
 * limit and threshold, no order of commits can change which events are accepted or what
 * is recorded, so it need not wait for them. A batch repeating a key of an unfinished
 * batch before it waits its turn all the same: the first copy is the one counted.
 */

/** A stage of a stream's order: `wait` resolves once every batch before it called `done` (or finished). */
interface Stage {
  wait: Promise<unknown>;
  done: () => void;
}

/** What a batch learns when it registers. */
export interface Admission {
  /** A key of the batch is also in an unfinished batch before it. */
  overlaps: boolean;
  /** Per period total (group key): what the unfinished batches before it may still add. */
  pending: Map<string, bigint>;
}

/** A batch's place in its stream. */
export interface Turn {
  /** Resolves once every batch before it registered (or finished). */
  admitted: Promise<unknown>;
  /** Registers the batch's keys (tenant → keys) and what it may add to each period total (group key → amount). */
  admit(keys: Map<string, Set<string>>, adds: Map<string, bigint>): Admission;
  keys: Stage;
  limits: Stage;
  /** The batch committed or failed: releases its stages and registration. Idempotent. */
  finish(): void;
}

/** Whether two batches hold a key in common (tenant → keys). */
function shares(a: Map<string, Set<string>>, b: Map<string, Set<string>>): boolean {
  for (const [tenantId, keys] of b) {
    const theirs = a.get(tenantId);
    if (theirs) for (const key of keys) if (theirs.has(key)) return true;
  }
  return false;
}

/** Gives each batch of one stream its turn. */
export function streamOrder(): () => Turn {
  let keys: Promise<unknown> = Promise.resolve();
  let limits: Promise<unknown> = Promise.resolve();
  let admitted: Promise<unknown> = Promise.resolve();
  const pending = new Map<string, bigint>();
  // The keys of the registered, unfinished batches (tenant → keys): the sets the batches built
  // for themselves, looked into rather than merged (a stream has at most a few in flight).
  const unfinished = new Set<Map<string, Set<string>>>();
  // A stage's successors wait for it and for everything before it: a batch that did not
  // wait may finish before the batches ahead of it.
  const stage = (before: Promise<unknown>): [Stage, Promise<unknown>] => {
    let done!: () => void;
    const mine = new Promise<void>((resolve) => (done = resolve));
    return [{ wait: before, done }, Promise.all([before, mine])];
  };
  return () => {
    const [k, afterKeys] = stage(keys);
    const [l, afterLimits] = stage(limits);
    const [a, afterAdmitted] = stage(admitted);
    [keys, limits, admitted] = [afterKeys, afterLimits, afterAdmitted];
    let registered: { keys: Map<string, Set<string>>; adds: Map<string, bigint> } | undefined;
    let finished = false;
    return {
      admitted: a.wait,
      admit(batchKeys, adds) {
        const overlaps = [...unfinished].some((earlier) => shares(earlier, batchKeys));
        unfinished.add(batchKeys);
        const before = new Map<string, bigint>();
        for (const [group, add] of adds) {
          const p = pending.get(group) ?? 0n;
          if (p > 0n) before.set(group, p);
          if (add > 0n) pending.set(group, p + add);
        }
        registered = { keys: batchKeys, adds };
        a.done();
        return { overlaps, pending: before };
      },
      keys: k,
      limits: l,
      finish() {
        if (finished) return;
        finished = true;
        if (registered) {
          unfinished.delete(registered.keys);
          for (const [group, add] of registered.adds) {
            if (add === 0n) continue;
            const p = pending.get(group)! - add;
            if (p > 0n) pending.set(group, p);
            else pending.delete(group);
          }
        }
        a.done();
        k.done();
        l.done();
      },
    };
  };
}
