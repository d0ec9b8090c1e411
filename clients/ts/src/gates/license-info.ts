/*
 * The license state product code gates on (PocketPaw's LicenseInfo: valid, code, features,
 * tier, expiry, grace), and the decision a gate takes from it. Reading it never throws: an
 * unlicensed deployment is a state, not an error, so an app can fall back to its free tier.
 */

export interface LicenseInfo {
  /** The software may run: a verified license or lease, not expired, not revoked. */
  valid: boolean;
  /**
   * Why: VALID; NO_LEASE (none yet); a verifier's code (EXPIRED, BAD_SIGNATURE, UNKNOWN_KEY, MALFORMED,
   * FINGERPRINT_MISMATCH, …); a revocation's reason (LICENSE_SUSPENDED, LICENSE_REVOKED, …); SOURCE_FAILED when the
   * source itself threw.
   */
  code: string;
  /** The features entitled; empty unless valid. */
  features: string[];
  /** The license's plan ("team", "enterprise", …); null when unknown. */
  tier: string | null;
  /** When it stops being valid (a lease's or license's expiry); null when it never expires or is unknown. */
  expiry: Date | null;
  /** Valid only by grace: the license itself has expired, and its policy still grants access for a while. */
  grace: boolean;
  /** The license's status when it was signed ("active", "expired", …); null when unknown. */
  status: string | null;
  /** Feature values (limits, flags, strings); empty unless valid. */
  entitlements: Record<string, boolean | number | string>;
  /** The license (`lic_…`) the lease or file is of; null when unknown. */
  licenseId: string | null;
  /** The machine the lease is bound to; null when there is none. */
  machineId: string | null;
  /** The source is in touch with licensd right now (LicenseGuard: its ConnectLease stream is open). */
  online: boolean;
  /** Why the source last failed to refresh the license (network, cache file); null when it did not. */
  error: string | null;
}

/** Anything that can say what the license is now: a LicenseGuard, or your own source. */
export interface LicenseSource {
  info(): LicenseInfo;
}

/** A license state that is not valid, for `code`. */
export function invalidLicense(code: string, more: Partial<LicenseInfo> = {}): LicenseInfo {
  const none = {
    tier: null,
    expiry: null,
    grace: false,
    status: null,
    licenseId: null,
    machineId: null,
    online: false,
    error: null,
  };
  return { ...none, ...more, valid: false, code, features: [], entitlements: {} };
}

/** A fixed license state as a source (a license checked once at start-up, or tests). */
export const fixedLicense = (info: LicenseInfo): LicenseSource => ({ info: () => info });

/** The source's answer; a source that throws counts as no license (code SOURCE_FAILED), never as a license. */
export function readLicense(source: LicenseSource): LicenseInfo {
  try {
    const info = source.info();
    if (info && typeof info === "object") return info;
    return invalidLicense("SOURCE_FAILED", { error: "the license source returned no LicenseInfo" });
  } catch (err) {
    return invalidLicense("SOURCE_FAILED", { error: err instanceof Error ? err.message : String(err) });
  }
}

/** What a gate decided for one request. */
export type GateDecision =
  | { allowed: true; info: LicenseInfo }
  | {
      allowed: false;
      info: LicenseInfo;
      /** "license": there is no valid license (HTTP 402); "feature": the license lacks the feature (HTTP 403). */
      missing: "license" | "feature";
      /** The feature the gate asked for; null for requireLicense. */
      feature: string | null;
      message: string;
    };

/** The decision for a license and an optional feature. Never throws. */
export function decide(source: LicenseSource, feature: string | null): GateDecision {
  const info = readLicense(source);
  if (!info.valid) {
    const message = `this needs a valid license (${info.code})`;
    return { allowed: false, info, missing: "license", feature, message };
  }
  if (feature !== null && !(Array.isArray(info.features) && info.features.includes(feature))) {
    const plan = info.tier ? ` (plan ${JSON.stringify(info.tier)})` : "";
    const message = `this needs the ${JSON.stringify(feature)} feature, which the license${plan} does not include`;
    return { allowed: false, info, missing: "feature", feature, message };
  }
  return { allowed: true, info };
}
