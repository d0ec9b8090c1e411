import type { Rejection } from "./usage-event.js";
import type { LimitState } from "./usage-records.js";

/** What the ingest answers for a batch of usage events (its own module: both write paths return it). */
export interface BatchResult {
  accepted: number;
  duplicates: number;
  /** Indexes of duplicate events (RecordUsage reports its one event's). */
  duplicateIndexes: number[];
  rejected: Rejection[];
  limits: LimitState[];
}
