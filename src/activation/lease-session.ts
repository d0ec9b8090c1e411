import type { Clock } from "../platform/clock.js";
import type { Database } from "../platform/db.js";
import { DomainError, invalidArgument } from "../platform/errors.js";
import { Interrupt } from "../platform/interrupt.js";
import type { KeyFailureLimit } from "../platform/key-failures.js";
import type { LeaseHub } from "./lease-hub.js";
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

  /** One stream's session; `address` is the client's (its key-failure budget pays for a bad first key). */
  async function* run(
    messages: AsyncIterable<LeaseMessage>,
    opts: { signal: AbortSignal; address: string },
  ): AsyncGenerator<LeaseEvent> {
    const { signal, address } = opts;
    const input = messages[Symbol.asyncIterator]();
    // A revocation or the client going away, raced with each message (a stream may stay open for days).
    const stop = new Interrupt<{ kind: "revoked"; r: { reason: string; message: string } } | { kind: "aborted" }>();
    const revoke = (r: { reason: string; message: string }) => stop.raise({ kind: "revoked", r });
    const onAbort = () => stop.raise({ kind: "aborted" });
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    const revocation = (r: { reason: string; message: string }): LeaseEvent => ({
      kind: "revocation",
      reason: r.reason,
      message: r.message,
      time: clock.now(),
    });
    let stopWatching: (() => void) | undefined;
    let expiry: NodeJS.Timeout | undefined;
    let key = "";
    let fingerprint = "";
    try {
      for (;;) {
        const next = await Promise.race([input.next().then((r) => ({ kind: "message" as const, r })), stop.next()]);
        if (next.kind === "aborted") return;
        if (next.kind === "revoked") {
          yield revocation(next.r);
          return;
        }
        if (next.r.done) return;
        const msg = next.r.value;
        if (!stopWatching) {
          if (!msg.key) throw invalidArgument("key", "the first message must carry the license key");
          if (!msg.fingerprint)
            throw invalidArgument("fingerprint", "the first message must carry the machine's fingerprint");
          ({ key, fingerprint } = msg);
          // Watch first, then check: a change committed in between is still pushed.
          const { license, machine } = await keyFailures.guard(address, () =>
            machines.identify(db.em(), key, fingerprint),
          );
          stopWatching = await hub.watch(license.tenantId, [license.id, machine.id], (reason, message) =>
            revoke({ reason, message }),
          );
        } else if ((msg.key && msg.key !== key) || (msg.fingerprint && msg.fingerprint !== fingerprint)) {
          throw invalidArgument(
            msg.key !== key ? "key" : "fingerprint",
            "must match the stream's first message (or be empty)",
          );
        }
        let beat: Awaited<ReturnType<typeof machines.heartbeatFast>>;
        try {
          beat =
            (await machines.heartbeatFast(db, key, fingerprint)) ??
            (await db.tx((em) => machines.heartbeat(em, key, fingerprint)));
        } catch (err) {
          if (err instanceof DomainError && REVOKING_REASONS.has(err.reason)) {
            yield revocation({
              reason: err.reason === "MACHINE_NOT_FOUND" ? "MACHINE_DEACTIVATED" : err.reason,
              message: err.message,
            });
            return;
          }
          throw err;
        }
        clearTimeout(expiry);
        const until = machines.runsUntil(beat.license, beat.policy);
        if (until) {
          const ms = until.getTime() - clock.now().getTime();
          if (ms <= MAX_TIMER_MS)
            expiry = setTimeout(
              () =>
                revoke({
                  reason: "LICENSE_EXPIRED",
                  message: `the license expired at ${beat.license.expiresAt!.toISOString()}`,
                }),
              Math.max(0, ms),
            );
        }
        yield { kind: "lease", lease: beat.lease };
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      stopWatching?.();
      clearTimeout(expiry);
      void input.return?.();
    }
  }

  return { run };
}

export type LeaseSessions = ReturnType<typeof createLeaseSessions>;
