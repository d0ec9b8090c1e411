/* The order a stream's concurrent batches keep: each writes its keys, and takes its limit locks, after the batch before it. */

/** A stage of a stream's order: entered after the previous batch's `done`. */
interface Stage {
  wait: Promise<unknown>;
  done: () => void;
}
/** A batch's place in its stream. */
export interface Turn {
  keys: Stage;
  limits: Stage;
}

/** Gives each batch of one stream its turn after the batch before it. */
export function streamOrder(): () => Turn {
  let keys: Promise<void> = Promise.resolve();
  let limits: Promise<void> = Promise.resolve();
  const stage = (after: Promise<void>): [Stage, Promise<void>] => {
    let done!: () => void;
    const next = new Promise<void>((resolve) => (done = resolve));
    return [{ wait: after, done }, next];
  };
  return () => {
    const [k, nextKeys] = stage(keys);
    const [l, nextLimits] = stage(limits);
    [keys, limits] = [nextKeys, nextLimits];
    return { keys: k, limits: l };
  };
}
