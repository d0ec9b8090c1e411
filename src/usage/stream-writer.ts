/*
 * StreamUsage's and IngestUsage's write engine: a stream's batches written as they arrive,
 * in overlapping transactions that keep the stream's order, each acknowledged after commit.
 */
import type { Principal } from "../platform/auth.js";
import type { BatchResult, IncomingEvent, IngestService, KeyGuard } from "./ingest.service.js";
import { streamOrder } from "./stream-order.js";

/** How many batches StreamUsage reads ahead of its acknowledgements: a stream's memory is bounded. */
export const MAX_UNACKED_BATCHES = 12;
/** How many transactions one stream runs at once: bounded so one stream cannot take the whole connection pool. */
export const STREAM_WRITERS = 3;
/**
 * Batches queued behind a stream's running transactions are written together, up to this many events (a larger batch
 * alone).
 */
export const MERGE_EVENTS = 2000;

/**
 * Writes a stream's batches as they arrive and yields each batch's result, in order, once
 * its transaction committed. Batches are read while earlier ones commit, at most
 * MAX_UNACKED_BATCHES ahead of the results; at most STREAM_WRITERS transactions run at
 * once; batches that queue up meanwhile are written together, in one transaction, when
 * one finishes (up to MERGE_EVENTS events). A failed transaction ends the stream with its
 * error: the client resends what was not acknowledged.
 */
export async function* writeInOrder<Id>(
  ingest: IngestService,
  who: Principal,
  batches: AsyncIterable<{ id: Id; events: IncomingEvent[] }>,
  keyGuard?: KeyGuard,
): AsyncGenerator<{ id: Id; result: BatchResult }> {
  type Batch = { id: Id; events: IncomingEvent[] };
  const input = batches[Symbol.asyncIterator]();
  const queued: Batch[] = [];
  const writing: { ids: Id[]; results: Promise<BatchResult[]> }[] = [];
  const nextTurn = streamOrder();
  let running = 0;
  let unacked = 0;
  // Resolves when a transaction finishes: the queued batches may start.
  let finished!: () => void;
  let aWriterFinished = new Promise<void>((resolve) => (finished = resolve));
  const start = () => {
    while (queued.length > 0 && running < STREAM_WRITERS) {
      const take = [queued.shift()!];
      let events = take[0]!.events.length;
      while (queued.length > 0 && events + queued[0]!.events.length <= MERGE_EVENTS) {
        const batch = queued.shift()!;
        take.push(batch);
        events += batch.events.length;
      }
      running++;
      // Transactions overlap, but meet their keys and limits in stream order.
      const results = ingest.ingestTogether(
        take.map((b) => b.events),
        who,
        { requireKey: true, turn: nextTurn(), keyGuard },
      );
      // (a failure is awaited, and reported, when its turn to be acknowledged comes)
      void results
        .catch(() => undefined)
        .finally(() => {
          running--;
          finished();
          aWriterFinished = new Promise<void>((resolve) => (finished = resolve));
        });
      writing.push({ ids: take.map((b) => b.id), results });
    }
  };
  let reading: Promise<IteratorResult<Batch>> | undefined = input.next();
  type Next = { kind: "batch"; r: IteratorResult<Batch> } | { kind: "ack" } | { kind: "slot" };
  try {
    while (reading || queued.length > 0 || writing.length > 0) {
      start();
      // Only what can happen is raced: a promise that never settles would keep a reaction
      // from every race, holding that race's outcome (the batch just read) for as long as it
      // lives. Something always can: while reading waits for acknowledgements, batches are
      // queued or being written.
      const arms: Promise<Next>[] = [];
      if (reading !== undefined && unacked < MAX_UNACKED_BATCHES)
        arms.push(reading.then((r) => ({ kind: "batch", r })));
      if (writing.length > 0)
        arms.push(
          writing[0]!.results.then(
            () => ({ kind: "ack" }),
            () => ({ kind: "ack" }),
          ),
        );
      if (queued.length > 0) arms.push(aWriterFinished.then(() => ({ kind: "slot" })));
      const next = await Promise.race(arms);
      if (next.kind === "slot") continue;
      if (next.kind === "batch") {
        if (next.r.done) reading = undefined;
        else {
          reading = input.next();
          queued.push(next.r.value);
          unacked++;
        }
        continue;
      }
      const head = writing.shift()!;
      const results = await head.results;
      for (const [i, result] of results.entries()) {
        unacked--;
        yield { id: head.ids[i]!, result };
      }
    }
  } finally {
    void input.return?.();
  }
}

/** IngestUsage writes its events in chunks of this many. */
export const INGEST_CHUNK = 500;

/** A stream's events (`eventOf` each message) as batches of `size`, each with its first event's offset as id. */
export async function* chunksOf<T>(
  messages: AsyncIterable<T>,
  eventOf: (message: T) => IncomingEvent,
  size = INGEST_CHUNK,
): AsyncGenerator<{ id: number; events: IncomingEvent[] }> {
  let chunk: IncomingEvent[] = [];
  let offset = 0;
  for await (const message of messages) {
    chunk.push(eventOf(message));
    if (chunk.length < size) continue;
    yield { id: offset, events: chunk };
    offset += chunk.length;
    chunk = [];
  }
  if (chunk.length > 0) yield { id: offset, events: chunk };
}
