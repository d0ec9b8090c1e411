interface Pending {
  message: string;
  resolve: (signed: { kid: string; signature: Buffer }) => void;
  reject: (err: unknown) => void;
}

/**
 * Ed25519 signatures for answers that can wait to the end of the event loop's turn
 * (ValidateLicense): what the turn's requests ask is signed together, back to back, once
 * the turn's I/O is read (setImmediate), and their answers then go out together.
 * Signing in a row keeps libsodium's tables and the code of the path in cache, and
 * answers written in a burst cost the loopback less: about a quarter less server CPU per
 * ValidateLicense than signing in each request (BENCHMARKS.md, "Design history").
 */
export class BatchSigner {
  private queue: Pending[] = [];
  private scheduled = false;

  /** `sign` signs with the key active when it is called (a rotation may come between asking and signing). */
  constructor(private readonly sign: (message: Uint8Array) => { kid: string; signature: Buffer }) {}

  later(message: string): Promise<{ kid: string; signature: Buffer }> {
    return new Promise((resolve, reject) => {
      this.queue.push({ message, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Signs what is waiting now (the store calls it before it stops). */
  flush() {
    this.scheduled = false;
    const items = this.queue;
    this.queue = [];
    // Each request hears back, whatever happens to the others: a failure fails its own call.
    for (const item of items) {
      try {
        item.resolve(this.sign(Buffer.from(item.message)));
      } catch (err) {
        item.reject(err);
      }
    }
  }
}
