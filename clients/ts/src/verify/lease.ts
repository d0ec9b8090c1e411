/*
 * Offline verification of activation leases (docs/formats.md, "Leases"): the license-file
 * envelope (`licensd1.<payload>.<signature>`), always Ed25519, with payload `typ` "lease",
 * bound to one machine.
 */
import type { Keys } from "./keys.js";
import { verifyEnvelope, type LicenseFilePayload, type LicenseFileResult } from "./license-file.js";

/** What a lease says. */
export interface LeasePayload extends Omit<LicenseFilePayload, "customer" | "fingerprint" | "expires_at"> {
  typ: "lease";
  machine_id: string;
  /** The machine the lease is bound to. */
  fingerprint: string;
  /** "active", or "expired" during a grace period. */
  status: string;
  /** ISO time; never null for a lease. */
  expires_at: string;
  /** Only present (true) for air-gapped machines. */
  offline?: true;
}

export interface LeaseCheck extends LicenseFileResult {
  /** The lease's claims, only when it is valid. */
  lease?: LeasePayload;
}

export interface VerifyLeaseOptions {
  /** This machine's fingerprint: the lease must be bound to it. */
  fingerprint: string;
  /** Defaults to the current time. */
  now?: Date;
}

/** Verifies a lease for this machine; the promise never rejects. */
export async function verifyLease(token: string, keys: Keys, opts: VerifyLeaseOptions): Promise<LeaseCheck> {
  const r = await verifyEnvelope(token, { keys, fingerprint: opts?.fingerprint, now: opts?.now });
  const typ = (r.payload as { typ?: unknown } | undefined)?.typ;
  if (r.payload && typ !== "lease") return { ...r, valid: false, code: "MALFORMED", hasFeature: () => false };
  return { ...r, lease: r.valid ? (r.payload as unknown as LeasePayload) : undefined };
}
