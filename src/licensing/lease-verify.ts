/*
 * Offline verification of activation leases: the same signed envelope as license files
 * (`licensd1.<payload>.<sig>`), with payload `typ` "lease" and bound to one machine.
 */
import { verifyEnvelope, type LicenseFileResult } from "./license-file-verify.js";

export interface LeaseCheck extends LicenseFileResult {
  /** The lease's claims when it verified (features, entitlements, expiry, machine). */
  lease?: LicenseFileResult["payload"] & { typ: "lease"; machine_id: string; status: string };
}

/** Verifies a lease for this machine with the published keys; never throws. */
export function verifyLease(
  token: string,
  keys: { kid: string; publicKey: Uint8Array }[],
  opts: { fingerprint: string; now?: Date },
): LeaseCheck {
  const r = verifyEnvelope(token, { keys, fingerprint: opts.fingerprint, now: opts.now });
  const typ = (r.payload as { typ?: string } | undefined)?.typ;
  if (r.payload && typ !== "lease") return { ...r, valid: false, code: "MALFORMED", hasFeature: () => false };
  return { ...r, lease: r.valid ? (r.payload as LeaseCheck["lease"]) : undefined };
}
