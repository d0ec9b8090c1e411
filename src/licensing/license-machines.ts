/**
 * The port through which licensing asks about a license's machines. Licensing owns this
 * interface; activation implements it (activation/license-machines.ts) and app.ts wires it,
 * so licensing imports nothing of activation.
 */

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

/** Alive processes on one machine of a license. */
export interface MachineProcesses {
  fingerprint: string;
  alive: number;
}

export interface LicenseMachines {
  /** Every machine of the license, in id order: one statement, read on each validation that names a fingerprint. */
  ofLicense(licenseId: string): Promise<LicenseMachine[]>;
  /** The signed lease token for the license's machine with this fingerprint; undefined when it is not activated. */
  leaseToken(licenseId: string, fingerprint: string): Promise<string | undefined>;
  /** The license's alive processes at `now`, by machine (machines without any left out): one statement. */
  aliveProcesses(licenseId: string, now: Date): Promise<MachineProcesses[]>;
}
