import type { Clock } from "../platform/clock.js";
import type { Database } from "../platform/db.js";
import { DomainError, invalidArgument } from "../platform/errors.js";
import { Interrupt } from "../platform/interrupt.js";
import type { KeyFailureLimit } from "../platform/key-failures.js";
import type { Logger } from "../platform/logger.js";
import type { LeaseHub, Revoke } from "./lease-hub.js";
import type { MachineService, SignedLease } from "./machine.service.js";
import type { ProcessService } from "./process.service.js";

/**
 * A ConnectLease message: the first names the license key and the machine, and may name a process the stream holds;
 * later ones may leave them empty.
 */
export interface LeaseMessage {
  key: string;
  fingerprint: string;
  processPid?: string;
}

/** What one stream holds: its license key and machine, and the process it spawned ("" for none). */
interface Held {
  key: string;
  fingerprint: string;
  processId: string;
}

/** What a lease session sends: a fresh lease for each message, or the revocation that ends it. */
export type LeaseEvent =
  | { kind: "lease"; lease: SignedLease }
  | { kind: "revocation"; reason: string; message: string; time: Date };

/** Failures of a heartbeat that mean the machine may no longer run (pushed as a revocation). */
const REVOKING_REASONS = new Set([
  "LICENSE_SUSPENDED",
  "LICENSE_REVOKED",
  "LICENSE_EXPIRED",
  "HEARTBEAT_DEAD",
  "MACHINE_NOT_FOUND",
  "PROCESS_DEAD",
  "PROCESS_NOT_FOUND",
]);

/** setTimeout's ceiling (about 24.8 days); later deadlines are re-armed by a later heartbeat. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * ConnectLease's sessions: each message is a heartbeat answered with a new lease; a change
 * to the license or the machine (seen in the audit log, on any instance), a failed
 * heartbeat that means the machine may no longer run, or the license's expiry is pushed as
 * a revocation that ends the session. The client going away ends it quietly.
 */
export function createLeaseSessions(deps: {
  db: Database;
  clock: Clock;
  machines: MachineService;
  processes: ProcessService;
  hub: LeaseHub;
  keyFailures: KeyFailureLimit;
  logger: Logger;
}) {
  const { db, clock, machines, processes, hub, keyFailures, logger } = deps;

  /**
   * The first message: the key and machine checked, and the watch in place; then the process it names spawned (or,
   * on a reconnect, adopted while still alive) and watched too. Only ids leave this function: a stream may stay open
   * for days, and the entities (with the EntityManager that loaded them) would stay with it.
   */
  async function open(address: string, msg: LeaseMessage, revoke: Revoke): Promise<{ held: Held; stop: () => void }> {
    const { key, fingerprint } = msg;
    // Watch first, then check: a change committed in between is still pushed.
    const { license, machine } = await keyFailures.guard(address, () => machines.identify(db.em(), key, fingerprint));
    const stopMachine = await hub.watch(license.tenantId, [license.id, machine.id], revoke);
    if (!msg.processPid) return { held: { key, fingerprint, processId: "" }, stop: stopMachine };
    const pid = msg.processPid;
    let process: Awaited<ReturnType<typeof processes.spawnByKey>>;
    try {
      process = await db.tx((em) => processes.spawnByKey(em, key, fingerprint, { pid, metadata: {} }, { adopt: true }));
    } catch (err) {
      stopMachine();
      throw err;
    }
    // The tenant's watch was already reading the log from before the spawn: a kill after it is still pushed.
    const stopProcess = await hub.watch(license.tenantId, [process.id], revoke);
    const stop = () => {
      stopMachine();
      stopProcess();
    };
    return { held: { key, fingerprint, processId: process.id }, stop };
  }

  /** Ends the stream's process (its slot is free at once); one already gone is no matter. */
  function release(held: Held) {
    if (!held.processId) return;
    db.tx((em) => processes.kill(em, { key: held.key }, "", held.processId)).catch((err: unknown) => {
      if (err instanceof DomainError && err.reason === "PROCESS_NOT_FOUND") return;
      logger.warn({ err, processId: held.processId }, "lease stream closed: could not kill its process");
    });
  }

  /**
   * A heartbeat: the fresh lease, or the revocation when the machine may no longer run, and when the license
   * expires (null: never). Like `open`, keeps no entity.
   */
  async function beat({
    key,
    fingerprint,
    processId,
  }: Held): Promise<{ event: LeaseEvent; expires?: { at: Date; message: string } | null }> {
    let stamped: Awaited<ReturnType<typeof machines.heartbeatFast>>;
    try {
      stamped =
        (await machines.heartbeatFast(db, key, fingerprint)) ??
        (await db.tx((em) => machines.heartbeat(em, key, fingerprint)));
      if (processId) await db.tx((em) => processes.ping(em, { key }, processId));
    } catch (err) {
      if (err instanceof DomainError && REVOKING_REASONS.has(err.reason)) {
        const reason =
          err.reason === "MACHINE_NOT_FOUND"
            ? "MACHINE_DEACTIVATED"
            : err.reason === "PROCESS_NOT_FOUND"
              ? "PROCESS_KILLED"
              : err.reason;
        return { event: { kind: "revocation", reason, message: err.message, time: clock.now() } };
      }
      throw err;
    }
    const until = machines.runsUntil(stamped.license, stamped.policy);
    const message = `the license expired at ${stamped.license.expiresAt?.toISOString()}`;
    return { event: { kind: "lease", lease: stamped.lease }, expires: until && { at: until, message } };
  }

  /** One stream's session; `address` is the client's (its key-failure budget pays for a bad first key). */
  async function* run(
    messages: AsyncIterable<LeaseMessage>,
    opts: { signal: AbortSignal; address: string },
  ): AsyncGenerator<LeaseEvent> {
    const { signal, address } = opts;
    const input = messages[Symbol.asyncIterator]();
    // A revocation or the client going away, raced with each message (a stream may stay open for days).
    const stop = new Interrupt<{ kind: "revoked"; r: { reason: string; message: string } } | { kind: "aborted" }>();
    const revoke: Revoke = (reason, message) => stop.raise({ kind: "revoked", r: { reason, message } });
    const onAbort = () => stop.raise({ kind: "aborted" });
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    let stopWatching: (() => void) | undefined;
    let expiry: NodeJS.Timeout | undefined;
    let held: Held | undefined;
    try {
      for (;;) {
        const next = await Promise.race([input.next().then((r) => ({ kind: "message" as const, r })), stop.next()]);
        if (next.kind === "aborted") return;
        if (next.kind === "revoked") {
          yield { kind: "revocation", ...next.r, time: clock.now() };
          return;
        }
        if (next.r.done) return;
        const msg = next.r.value;
        if (!held) {
          ({ held, stop: stopWatching } = await open(address, first(msg), revoke));
        } else sameMachine(msg, held);
        const { event, expires } = await beat(held);
        if (event.kind === "revocation") {
          yield event;
          return;
        }
        clearTimeout(expiry);
        expiry = expires ? expireAt(expires.at, expires.message, revoke) : undefined;
        yield event;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      stopWatching?.();
      clearTimeout(expiry);
      if (held) release(held);
      void input.return?.();
    }
  }

  /**
   * One stream's session driven by callbacks (the lean gRPC path, platform/lean-stream.ts): each message is served
   * as `run` serves it, events go to `sink`, and `sink.end` ends the stream (a revocation is the last event). Holds
   * no generator, no promise and no entity between messages: an idle stream costs its ids and a watch.
   */
  function attach(address: string, sink: { event(e: LeaseEvent): void; end(): void }) {
    let held: Held | undefined;
    let stopWatching: (() => void) | undefined;
    let expiry: NodeJS.Timeout | undefined;
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      stopWatching?.();
      stopWatching = undefined;
      clearTimeout(expiry);
      if (held) release(held);
    };
    const revoke: Revoke = (reason, message) => {
      if (closed) return;
      close();
      sink.event({ kind: "revocation", reason, message, time: clock.now() });
      sink.end();
    };
    return {
      async message(msg: LeaseMessage) {
        if (closed) return;
        if (!held) {
          const opened = await open(address, first(msg), revoke);
          held = opened.held;
          if (closed) {
            // The client went away while the stream opened: what it opened ends here.
            opened.stop();
            release(held);
            return;
          }
          stopWatching = opened.stop;
        } else sameMachine(msg, held);
        if (closed) return;
        const { event, expires } = await beat(held);
        if (closed) return;
        if (event.kind === "revocation") {
          close();
          sink.event(event);
          sink.end();
          return;
        }
        clearTimeout(expiry);
        expiry = expires ? expireAt(expires.at, expires.message, revoke) : undefined;
        sink.event(event);
      },
      close,
    };
  }

  /** The timer that revokes at the license's expiry; none past setTimeout's range (a later heartbeat re-arms it). */
  function expireAt(at: Date, message: string, revoke: Revoke): NodeJS.Timeout | undefined {
    const ms = at.getTime() - clock.now().getTime();
    if (ms > MAX_TIMER_MS) return undefined;
    return setTimeout(() => revoke("LICENSE_EXPIRED", message), Math.max(0, ms));
  }

  return { run, attach };
}

/** A stream's first message: it names the license key and the machine, and perhaps a process. */
function first(msg: LeaseMessage): LeaseMessage {
  if (!msg.key) throw invalidArgument("key", "the first message must carry the license key");
  if (!msg.fingerprint) throw invalidArgument("fingerprint", "the first message must carry the machine's fingerprint");
  return { key: msg.key, fingerprint: msg.fingerprint, processPid: msg.processPid ?? "" };
}

/** A later message: its key and fingerprint, when given, are the first message's; it names no other process. */
function sameMachine(msg: LeaseMessage, { key, fingerprint }: Held) {
  if ((msg.key && msg.key !== key) || (msg.fingerprint && msg.fingerprint !== fingerprint)) {
    throw invalidArgument(
      msg.key !== key ? "key" : "fingerprint",
      "must match the stream's first message (or be empty)",
    );
  }
  if (msg.processPid) throw invalidArgument("process_pid", "only the stream's first message may name a process");
}

export type LeaseSessions = ReturnType<typeof createLeaseSessions>;
