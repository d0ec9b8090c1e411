/**
 * Something that may happen at any moment of a long stream's life (a revocation, the
 * client going away), for a loop that waits for it alongside each message, turn after turn.
 *
 * Racing one long-lived promise on every turn leaks: each Promise.race adds a reaction to
 * that promise, and the reaction holds the race's outcome (the message the turn read)
 * until the promise settles, which for a stream open for days may be never. `next()`
 * gives each turn a promise of its own, dropped with the turn. (Written here: a dozen
 * lines, and no maintained package does just this.)
 */
export class Interrupt<T> {
  #raised: { value: T } | undefined;
  #wake: ((value: T) => void) | undefined;

  /** Records the first outcome and wakes the waiting turn; later calls change nothing. */
  raise(value: T): void {
    if (this.#raised) return;
    this.#raised = { value };
    this.#wake?.(value);
    this.#wake = undefined;
  }

  /** This turn's promise: settles when raised (at once if it already was). */
  next(): Promise<T> {
    if (this.#raised) return Promise.resolve(this.#raised.value);
    return new Promise((resolve) => (this.#wake = resolve));
  }
}

/**
 * `messages` until `signal` aborts (the server shutting down): a stream stops reading there, while
 * what it already read is still answered, instead of waiting on a client that may send nothing more.
 */
export async function* untilAborted<T>(messages: AsyncIterable<T>, signal: AbortSignal): AsyncGenerator<T> {
  const input = messages[Symbol.asyncIterator]();
  const stop = new Interrupt<"aborted">();
  const onAbort = () => stop.raise("aborted");
  if (signal.aborted) onAbort();
  else signal.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      const next = await Promise.race([input.next(), stop.next()]);
      if (next === "aborted" || next.done) return;
      yield next.value;
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    void input.return?.();
  }
}
