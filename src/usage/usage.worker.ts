import type { Clock } from "../platform/clock.js";
import { sql, type Database } from "../platform/db.js";
import type { Logger } from "../platform/logger.js";
import { every, type Every } from "../platform/worker.js";
import type { IngestService } from "./ingest.service.js";
import { DEDUPE_RETENTION_MS } from "./usage-event.js";
import type { AnomalyService } from "./anomaly.service.js";

/**
 * Usage housekeeping: creates the monthly partitions of usage_events ahead of time (this
 * month and the next two; ingestion also creates a missing one on demand), and drops
 * deduplication keys older than any event that can still be accepted (7 days + a day),
 * and scores the last closed UTC day for anomalies (recorded once, whichever instance runs first).
 */
export function createUsageWorker(deps: {
  db: Database;
  clock: Clock;
  logger: Logger;
  ingest: IngestService;
  anomalies: AnomalyService;
  intervalMs?: number;
}) {
  const { db, clock, logger, ingest, anomalies } = deps;
  let loop: Every | undefined;
  let lastScored = "";

  async function tick() {
    const now = clock.now();
    for (let i = -1; i <= 2; i++)
      await ingest.ensurePartition(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + i, 1)));
    await sql(db, `delete from usage_dedupe where received_at < $1`, [new Date(now.getTime() - DEDUPE_RETENTION_MS)]);
    // Once per closed day per process (every instance may do it: recording is idempotent).
    const yesterday = new Date(now.getTime() - 86_400_000);
    const day = yesterday.toISOString().slice(0, 10);
    if (day !== lastScored) {
      await anomalies.detect(yesterday);
      lastScored = day;
    }
  }

  return {
    tick,
    async start() {
      await tick();
      loop = every(deps.intervalMs ?? 3_600_000, tick, { name: "usage worker", logger });
    },
    /** Resolves once a running pass has ended. */
    async stop() {
      await loop?.stop();
    },
  };
}

export type UsageWorker = ReturnType<typeof createUsageWorker>;
