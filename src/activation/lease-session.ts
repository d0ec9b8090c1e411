import type { Clock } from "../platform/clock.js";
import type { Database } from "../platform/db.js";
import { DomainError, invalidArgument } from "../platform/errors.js";
import { Interrupt } from "../platform/interrupt.js";
import type { KeyFailureLimit } from "../platform/key-failures.js";
import type { LeaseHub, Revoke } from "./lease-hub.js";
import type { MachineService, SignedLease } from "./machine.service.js";

/** A ConnectLease message: the first names the license key and the machine; later ones may leave them empty. */
export interface LeaseMessage {
  key: string;
  fingerprint: string;
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
  hub: LeaseHub;
  keyFailures: KeyFailureLimit;
}) {
  const { db, clock, machines, hub, keyFailures } = deps;

  /**
   * The first message: the key and machine checked, and the watch in place. Only ids leave this function: a
   * stream may stay open for days, and the entities (with the EntityManager that loaded them) would stay with it.
   */
  async function open(address: string, key: string, fingerprint: string, revoke: Revoke): Promise<() => void> {
    // Watch first, then check: a change committed in between is still pushed.
    const { license, machine } = await keyFailures.guard(address, () => machines.identify(db.em(), key, fingerprint));
    return hub.watch(license.tenantId, [license.id, machine.id], revoke);
  }

  /**
   * A heartbeat: the fresh lease, or the revocation when the machine may no longer run, and when the license
   * expires (null: never). Like `open`, keeps no entity.
   */
  async function beat(
    key: string,
    fingerprint: string,
  ): Promise<{ event: LeaseEvent; expires?: { at: Date; message: string } | null }> {
    let stamped: Awaited<ReturnType<typeof machines.heartbeatFast>>;
    try {
      stamped =
        (await machines.heartbeatFast(db, key, fingerprint)) ??
        (await db.tx((em) => machines.heartbeat(em, key, fingerprint)));
    } catch (err) {
      if (err instanceof DomainError && REVOKING_REASONS.has(err.reason)) {
        const reason = err.reason === "MACHINE_NOT_FOUND" ? "MACHINE_DEACTIVATED" : err.reason;
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
    let key = "";
    let fingerprint = "";
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
        if (!stopWatching) {
          ({ key, fingerprint } = first(msg));
          stopWatching = await open(address, key, fingerprint, revoke);
        } else sameMachine(msg, key, fingerprint);
        const { event, expires } = await beat(key, fingerprint);
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
      void input.return?.();
    }
  }

  /**
   * One stream's session driven by callbacks (the lean gRPC path, platform/lean-stream.ts): each message is served
   * as `run` serves it, events go to `sink`, and `sink.end` ends the stream (a revocation is the last event). Holds
   * no generator, no promise and no entity between messages: an idle stream costs its ids and a watch.
   */
  function attach(address: string, sink: { event(e: LeaseEvent): void; end(): void }) {
    let key = "";
    let fingerprint = "";
    let stopWatching: (() => void) | undefined;
    let expiry: NodeJS.Timeout | undefined;
    let closed = false;
    const close = () => {
      closed = true;
      stopWatching?.();
      stopWatching = undefined;
      clearTimeout(expiry);
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
        if (!key) {
          ({ key, fingerprint } = first(msg));
          const stop = await open(address, key, fingerprint, revoke);
          if (closed) stop();
          else stopWatching = stop;
        } else sameMachine(msg, key, fingerprint);
        if (closed) return;
        const { event, expires } = await beat(key, fingerprint);
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

/** A stream's first message: it names the license key and the machine. */
function first(msg: LeaseMessage): LeaseMessage {
  if (!msg.key) throw invalidArgument("key", "the first message must carry the license key");
  if (!msg.fingerprint) throw invalidArgument("fingerprint", "the first message must carry the machine's fingerprint");
  return { key: msg.key, fingerprint: msg.fingerprint };
}

/** A later message: its key and fingerprint, when given, are the first message's. */
function sameMachine(msg: LeaseMessage, key: string, fingerprint: string) {
  if ((msg.key && msg.key !== key) || (msg.fingerprint && msg.fingerprint !== fingerprint)) {
    throw invalidArgument(
      msg.key !== key ? "key" : "fingerprint",
      "must match the stream's first message (or be empty)",
    );
  }
}

export type LeaseSessions = ReturnType<typeof createLeaseSessions>;
