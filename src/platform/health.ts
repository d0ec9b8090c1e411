import { EventEmitter, on } from "node:events";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type Health,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as Status,
  HealthListResponseSchema,
} from "../../gen/ts/health/v1/health_pb.js";
import type { Logger } from "./logger.js";
import { every, type Every } from "./worker.js";

export { Status as ServingStatus };

/**
 * Serving status of the whole server ("") and of each service. Every licensd service
 * needs the database, so one periodic ping decides them all; shutdown turns them all
 * NOT_SERVING first so load balancers stop sending work.
 */
export class HealthState {
  private readonly statuses = new Map<string, Status>();
  private readonly changes = new EventEmitter();
  private loop: Every | undefined;

  constructor(serviceNames: string[]) {
    for (const name of ["", ...serviceNames]) this.statuses.set(name, Status.NOT_SERVING);
    this.changes.setMaxListeners(0);
  }

  get(service: string): Status | undefined {
    return this.statuses.get(service);
  }

  all(): Map<string, Status> {
    return new Map(this.statuses);
  }

  setAll(status: Status) {
    for (const [name, old] of this.statuses) {
      if (old === status) continue;
      this.statuses.set(name, status);
      this.changes.emit("change", name, status);
    }
  }

  /** Pings the database every `intervalMs` and reflects the answer. */
  monitor(ping: () => Promise<boolean>, logger: Logger, intervalMs = 1_000) {
    const tick = async () => {
      const up = await ping();
      const next = up ? Status.SERVING : Status.NOT_SERVING;
      if (this.statuses.get("") !== next)
        logger[up ? "info" : "error"]({ database: up ? "up" : "down" }, "database health changed");
      if (this.loop) this.setAll(next);
    };
    this.loop = every(intervalMs, tick, { name: "database health check", logger });
    return tick();
  }

  /** Everything turns NOT_SERVING at once; resolves once a running ping has ended. */
  stop(): Promise<void> {
    const loop = this.loop;
    this.loop = undefined;
    this.setAll(Status.NOT_SERVING);
    return loop?.stop() ?? Promise.resolve();
  }

  /**
   * Statuses of `service` as they change, until `signal` aborts. Subscribes at once
   * (before the caller sends the current status), so no change falls in between.
   */
  subscribe(service: string, signal: AbortSignal): AsyncIterable<Status> {
    const events = on(this.changes, "change", { signal });
    return (async function* () {
      try {
        for await (const [name, status] of events) {
          if (name === service) yield status as Status;
        }
      } catch (err) {
        if (!signal.aborted) throw err;
      }
    })();
  }
}

/** grpc.health.v1.Health: Check, Watch and List, as the gRPC health protocol defines them. */
export function createHealthRpc(state: HealthState): ServiceImpl<typeof Health> {
  return {
    check(req) {
      const status = state.get(req.service);
      if (status === undefined) throw new ConnectError(`unknown service ${JSON.stringify(req.service)}`, Code.NotFound);
      return create(HealthCheckResponseSchema, { status });
    },
    async *watch(req, ctx) {
      const changes = state.subscribe(req.service, ctx.signal);
      yield create(HealthCheckResponseSchema, { status: state.get(req.service) ?? Status.SERVICE_UNKNOWN });
      for await (const next of changes) {
        yield create(HealthCheckResponseSchema, { status: next });
      }
    },
    list() {
      const statuses: Record<string, { status: Status }> = {};
      for (const [name, status] of state.all()) statuses[name] = { status };
      return create(HealthListResponseSchema, { statuses });
    },
  };
}
