import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import sodium from "sodium-native";
import type { Logger } from "./logger.js";

// The worker's whole program. It keeps each key it is given in libsodium's guarded memory
// (wiping the copy it received), signs each batch with the key the batch names, and answers
// with the signatures end to end in one transferred buffer. A batch whose key it does not
// hold is answered with an error, and the main thread signs it itself.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const sodium = require(workerData.sodium);
const keys = new Map();
parentPort.on("message", (m) => {
  if (m.type === "key") {
    const secretKey = sodium.sodium_malloc(sodium.crypto_sign_SECRETKEYBYTES);
    secretKey.set(m.secretKey);
    m.secretKey.fill(0);
    keys.set(m.kid, secretKey);
  } else if (m.type === "drop") {
    const secretKey = keys.get(m.kid);
    keys.delete(m.kid);
    if (secretKey) sodium.sodium_free(secretKey);
  } else {
    const secretKey = keys.get(m.kid);
    if (!secretKey) return parentPort.postMessage({ id: m.id, error: "unknown key " + m.kid });
    const signatures = new Uint8Array(sodium.crypto_sign_BYTES * m.messages.length);
    for (let i = 0; i < m.messages.length; i++) {
      sodium.crypto_sign_detached(signatures.subarray(i * 64, i * 64 + 64), Buffer.from(m.messages[i]), secretKey);
    }
    parentPort.postMessage({ id: m.id, signatures }, [signatures.buffer]);
  }
});
`;

interface Pending {
  message: string;
  /** The key that signs it: the one active when its batch leaves (a batch shares one). */
  kid: string;
  resolve: (signed: { kid: string; signature: Buffer }) => void;
}

interface Batch {
  id: number;
  items: Pending[];
}

/**
 * Ed25519 signing on a worker thread, for answers that can wait a moment for their
 * signature (ValidateLicense). What is asked in one turn of the event loop goes to the
 * worker as one batch, after the turn's I/O, and comes back as one message: per signature
 * the event loop spends ~1.5 µs under load (batches of 8) and ~10 µs alone, against ~17 µs
 * signing in line, and the signing itself runs on another core. Measured on the benchmark
 * host, 40,000 signatures each way (scratch harness, noted in the licensing issue).
 *
 * Written here: worker pools on npm (piscina, tinypool) send one message per task, which
 * costs about what a signature does; batching per event-loop turn is the point.
 *
 * If the worker cannot start or dies, batches in flight and everything after are signed
 * in line: slower, never lost.
 */
export class BatchSigner {
  private worker: Worker | undefined;
  private broken = false;
  private queue: Pending[] = [];
  private scheduled = false;
  private nextId = 1;
  private readonly inFlight = new Map<number, Batch>();
  /** Keys the worker holds (kid), so a key is sent once. */
  private readonly sent = new Set<string>();

  constructor(
    private readonly activeKey: () => { kid: string; secretKey: Buffer },
    private readonly logger: Logger,
  ) {}

  sign(message: string): Promise<{ kid: string; signature: Buffer }> {
    return new Promise((resolve) => {
      this.queue.push({ message, kid: "", resolve });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Forgets a key the store replaced: the worker wipes and frees its copy. */
  drop(kid: string) {
    if (this.sent.delete(kid)) this.worker?.postMessage({ type: "drop", kid });
  }

  /** Signs what is still waiting in line, then stops the worker. */
  async stop() {
    this.flushInline();
    const worker = this.worker;
    this.worker = undefined;
    this.broken = true;
    await worker?.terminate();
  }

  private flush() {
    this.scheduled = false;
    const items = this.queue;
    this.queue = [];
    if (items.length === 0) return;
    const { kid, secretKey } = this.activeKey();
    const worker = this.ensureWorker();
    if (!worker) return signInline(items, kid, secretKey);
    if (!this.sent.has(kid)) {
      // A copy for the worker, transferred: nothing of it stays on this thread.
      const copy = new Uint8Array(secretKey.length);
      copy.set(secretKey);
      worker.postMessage({ type: "key", kid, secretKey: copy }, [copy.buffer]);
      this.sent.add(kid);
    }
    for (const item of items) item.kid = kid;
    const id = this.nextId++;
    this.inFlight.set(id, { id, items });
    worker.postMessage({ id, kid, messages: items.map((i) => i.message) });
  }

  /**
   * Signs in line what waits in line and what the worker has not answered, with the key
   * active now (a batch's own key may have been replaced and freed meanwhile).
   */
  private flushInline() {
    const items = [...this.queue, ...[...this.inFlight.values()].flatMap((b) => b.items)];
    this.queue = [];
    this.inFlight.clear();
    if (items.length > 0) {
      const { kid, secretKey } = this.activeKey();
      signInline(items, kid, secretKey);
    }
  }

  private ensureWorker(): Worker | undefined {
    if (this.worker || this.broken) return this.worker;
    try {
      const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { sodium: createRequire(import.meta.url).resolve("sodium-native") } });
      worker.unref();
      worker.on("message", (m: { id: number; signatures?: Uint8Array; error?: string }) => {
        const batch = this.inFlight.get(m.id);
        if (!batch) return;
        this.inFlight.delete(m.id);
        if (!m.signatures) {
          this.logger.warn({ error: m.error }, "signing worker refused a batch; signed in line");
          const { kid, secretKey } = this.activeKey();
          return signInline(batch.items, kid, secretKey);
        }
        const all = Buffer.from(m.signatures.buffer, m.signatures.byteOffset, m.signatures.byteLength);
        batch.items.forEach((item, i) => item.resolve({ kid: item.kid, signature: all.subarray(i * 64, i * 64 + 64) }));
      });
      const fail = (err: unknown) => {
        if (this.worker !== worker) return;
        this.logger.error({ err }, "signing worker stopped; signing in line from now on");
        this.worker = undefined;
        this.broken = true;
        this.flushInline();
      };
      worker.on("error", fail);
      worker.on("exit", (code) => fail(new Error(`exit code ${code}`)));
      this.worker = worker;
      return worker;
    } catch (err) {
      this.logger.error({ err }, "cannot start the signing worker; signing in line");
      this.broken = true;
      return undefined;
    }
  }
}

function signInline(items: Pending[], kid: string, secretKey: Buffer) {
  for (const item of items) {
    item.kid = kid;
    const signature = Buffer.allocUnsafe(sodium.crypto_sign_BYTES);
    sodium.crypto_sign_detached(signature, Buffer.from(item.message), secretKey);
    item.resolve({ kid: item.kid, signature });
  }
}
