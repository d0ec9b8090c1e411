import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { ReadCounts, ReplicaStatus } from "./replicas.js";

/** Prometheus metrics of one process, served as text at GET /metrics. */
export class Metrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: "licensd_rpc_requests_total",
    help: "RPCs handled, by procedure and Connect code.",
    labelNames: ["procedure", "code"] as const,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: "licensd_rpc_duration_seconds",
    help: "RPC handling time, by procedure.",
    labelNames: ["procedure"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({
    name: "licensd_rpc_in_flight",
    help: "RPCs (and open streams) being handled now.",
    registers: [this.registry],
  });

  readonly webhookAttempts = new Counter({
    name: "licensd_webhook_deliveries_total",
    help:
      "Webhook delivery attempts, by outcome: succeeded (2xx), failed (another status), gone (410), " +
      "error (no answer).",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly webhookAttemptSeconds = new Histogram({
    name: "licensd_webhook_attempt_duration_seconds",
    help: "Webhook delivery attempts, from the request to the end of the (bounded) answer.",
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15],
    registers: [this.registry],
  });

  constructor(pool?: () => { total: number; idle: number; waiting: number } | undefined) {
    collectDefaultMetrics({ register: this.registry, prefix: "licensd_" });
    if (pool) {
      for (const [field, help] of [
        ["total", "Connections in the database pool."],
        ["idle", "Idle connections in the database pool."],
        ["waiting", "Queries waiting for a database connection."],
      ] as const) {
        new Gauge({
          name: `licensd_db_pool_${field}`,
          help,
          registers: [this.registry],
          collect() {
            this.set(pool()?.[field] ?? 0);
          },
        });
      }
    }
  }

  /**
   * Read replicas (docs/replicas.md): each one's lag and whether it serves reads now, and where the reads that
   * tolerate bounded staleness were served.
   */
  observeReplicas(source: { status(): ReplicaStatus[]; counts: ReadCounts }) {
    new Gauge({
      name: "licensd_db_replica_lag_seconds",
      help:
        "How far each read replica is behind the primary: every write committed longer ago than this is replayed " +
        "on it (+Inf: not measured, unreachable or not a standby).",
      labelNames: ["replica"] as const,
      registers: [this.registry],
      collect() {
        for (const r of source.status())
          this.set({ replica: r.name }, r.lagMs === undefined ? Number.POSITIVE_INFINITY : r.lagMs / 1000);
      },
    });
    new Gauge({
      name: "licensd_db_replica_serving",
      help: "1 while a read replica serves reads (reachable, a standby, lag under the bound), else 0.",
      labelNames: ["replica"] as const,
      registers: [this.registry],
      collect() {
        for (const r of source.status()) this.set({ replica: r.name }, r.state === "fresh" ? 1 : 0);
      },
    });
    new Counter({
      name: "licensd_db_stale_ok_reads_total",
      help:
        "Reads that tolerate bounded staleness (lists, summaries, audit reads and proofs), by where they were " +
        "served: replica, or primary (no replica fresh enough, none configured, or the replica failed the read).",
      labelNames: ["served_by"] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc({ served_by: "replica" }, source.counts.replica);
        this.inc({ served_by: "primary" }, source.counts.primary);
      },
    });
  }
}
