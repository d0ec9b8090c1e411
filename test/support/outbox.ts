/**
 * The request side of a client or bidirectional stream, fed by the test: `push` queues a
 * message, `end` closes the side once the queue is drained. (Connect clients take an
 * AsyncIterable of requests; this is the smallest one a test can write into.)
 */
export function outbox<T>() {
  const queue: T[] = [];
  let wake: (() => void) | undefined;
  let closed = false;
  async function* messages() {
    for (;;) {
      while (queue.length > 0) yield queue.shift()!;
      if (closed) return;
      await new Promise<void>((r) => (wake = r));
    }
  }
  return {
    messages: messages() as AsyncIterable<T>,
    push(message: T) {
      queue.push(message);
      wake?.();
    },
    end() {
      closed = true;
      wake?.();
    },
  };
}
