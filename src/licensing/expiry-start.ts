import type { Clock } from "../platform/clock.js";
import { sql, type EntityManager } from "../platform/db.js";
import type { Events } from "../events/events.js";
import type { ExpirationBasis } from "./entitlements.js";

/** What can start a license's expiry, besides its creation. */
export type ExpiryStartEvent = "activation" | "validation" | "use";

const BASIS_OF: Record<ExpiryStartEvent, ExpirationBasis> = {
  activation: "from_first_activation",
  validation: "from_first_validation",
  use: "from_first_use",
};

/**
 * Whether `event` starts a pending license's expiry under its policy's basis. Under FROM_CREATION (a policy changed
 * after the license was created) any of them does: the expiry should have started already.
 */
export const startsExpiry = (basis: ExpirationBasis, event: ExpiryStartEvent) =>
  basis === BASIS_OF[event] || basis === "from_creation";

/**
 * Starts a license's pending expiry in `em`'s transaction: the license row is locked first, then the time read, so of
 * concurrent starters on any instance exactly one finds it pending (the others wait for the lock, then find it
 * started) and its time is the earliest any of them reads after the lock. The expiry becomes that time plus the
 * policy's duration (none for a perpetual policy), in one `license.expiry_started` audit entry. Returns the license's
 * expiry afterwards, whoever started it; `started` when this call did.
 */
export async function startExpiry(
  em: EntityManager,
  deps: { clock: Clock; events: Events },
  licenseId: string,
  event: ExpiryStartEvent,
): Promise<{ started: boolean; expiresAt: Date | null }> {
  const [locked] = await sql<{ tenant_id: string; duration_seconds: string | null }>(
    em,
    `select l.tenant_id, p.duration_seconds from licenses l join policies p on p.id = l.policy_id
      where l.id = $1 and l.expiry_pending for update of l`,
    [licenseId],
  );
  if (!locked) {
    const [r] = await sql<{ expires_ms: string | null }>(
      em,
      `select (extract(epoch from expires_at) * 1000)::bigint as expires_ms from licenses where id = $1`,
      [licenseId],
    );
    return { started: false, expiresAt: r?.expires_ms == null ? null : new Date(Number(r.expires_ms)) };
  }
  const now = deps.clock.now();
  const expiresAt =
    locked.duration_seconds === null ? null : new Date(now.getTime() + Number(locked.duration_seconds) * 1000);
  await sql(em, `update licenses set expiry_pending = false, expires_at = $2, updated_at = $3 where id = $1`, [
    licenseId,
    expiresAt,
    now,
  ]);
  await deps.events.emit(em, {
    tenantId: locked.tenant_id,
    type: "license.expiry_started",
    subject: licenseId,
    actor: `license:${licenseId}`,
    payload: { on: event, started_at: now.toISOString(), expires_at: expiresAt?.toISOString() ?? null },
  });
  return { started: true, expiresAt };
}
