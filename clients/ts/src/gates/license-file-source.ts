/*
 * A license file (`licensd1.…`, IssueLicenseFile) as a license source, for software that
 * runs offline on a file it was given (PocketPaw's model): verified once, then answered from
 * memory with the expiry read against the clock at every info(), so a file stops granting
 * features the moment it expires, without being verified again.
 */
import { type VerifyLicenseFileOptions, verifyLicenseFile } from "../verify/license-file.js";
import { invalidLicense, type LicenseInfo, type LicenseSource } from "./license-info.js";

export interface LicenseFileSourceOptions extends Omit<VerifyLicenseFileOptions, "now"> {
  /** The clock expiry is read against (default: the system's). */
  now?: () => Date;
}

/** Verifies `file` (signature, key, binding) and returns a source that never throws. */
export async function licenseFileSource(file: string, opts: LicenseFileSourceOptions = {}): Promise<LicenseSource> {
  const { now = () => new Date(), ...verify } = opts;
  // At the epoch nothing has expired yet: this checks everything but the expiry, which info() checks.
  const r = await verifyLicenseFile(file, { ...verify, now: new Date(0) }).catch(() => undefined);
  const payload = r?.valid ? r.payload : undefined;
  if (!r || !payload) {
    const fixed = invalidLicense(r?.code ?? "MALFORMED");
    return { info: () => fixed };
  }
  const expiry = typeof payload.expires_at === "string" ? new Date(payload.expires_at) : null;
  const claims = { tier: payload.plan || null, expiry, licenseId: payload.license_id, machineId: null };
  return {
    info(): LicenseInfo {
      let at = Number.NaN;
      try {
        at = now().getTime();
      } catch {
        // Fail safe: an unreadable clock counts as past every expiry.
      }
      if (expiry !== null && !(expiry.getTime() > at)) return invalidLicense("EXPIRED", claims);
      return {
        ...claims,
        valid: true,
        code: "VALID",
        features: [...payload.features],
        entitlements: { ...payload.entitlements },
        // A license file carries no status and no grace: it is valid until its expiry, then not at all.
        grace: false,
        status: null,
        online: false,
        error: null,
      };
    },
  };
}
