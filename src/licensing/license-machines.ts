/**
 * The port through which licensing asks about a license's machines. Licensing owns this
 * interface; activation implements it (activation/license-machines.ts) and app.ts wires it,
 * so licensing imports nothing of activation.
 */

import type { Component } from "./components.js";

/** One machine of a license, as validation checks it. */
export interface LicenseMachine {
  fingerprint: string;
  /** Last heartbeat, epoch milliseconds (bigint text). */
  last_ms: string;
  status: string;
  offline: boolean;
  /** It has heartbeated at least once (HEARTBEAT_BASIS_FROM_FIRST_HEARTBEAT counts from then). */
  heartbeated: boolean;
}

export interface LicenseMachines {
  /** Every machine of the license, in id order: one statement, read on each validation that names a fingerprint. */
  ofLicense(licenseId: string): Promise<LicenseMachine[]>;
  /** The components the license's machine with this fingerprint registered, in name order (none: empty). */
  componentsOf(licenseId: string, fingerprint: string): Promise<Component[]>;
  /** The signed lease token for the license's machine with this fingerprint; undefined when it is not activated. */
  leaseToken(licenseId: string, fingerprint: string): Promise<string | undefined>;
}
