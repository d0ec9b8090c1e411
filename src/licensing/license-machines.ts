import type { EntityManager } from "../platform/db.js";
import type { MachineUniquenessScope } from "./entitlements.js";

/**
 * The port through which licensing asks about a license's machines. Licensing owns this
 * interface; activation implements it (activation/license-machines.ts) and app.ts wires it,
 * so licensing imports nothing of activation.
 */

import { invalidArgument } from "../platform/errors.js";

/** One machine of a license, as validation checks it. */
export interface LicenseMachine {
  fingerprint: string;
  /** Last heartbeat, epoch milliseconds (bigint text). */
  last_ms: string;
  status: string;
  offline: boolean;
  /** It has heartbeated at least once (HEARTBEAT_BASIS_FROM_FIRST_HEARTBEAT counts from then). */
  heartbeated: boolean;
  /** CPU cores it reported (0: none; counted as 1 against a core limit). */
  cores: number;
}

/** A license as its (new) policy's machine uniqueness scope sees it. */
export interface ScopedLicense {
  id: string;
  tenantId: string;
  policyId: string;
  productId: string;
  scope: MachineUniquenessScope;
}

/** Alive processes on one machine of a license. */
export interface MachineProcesses {
  fingerprint: string;
  alive: number;
}

export interface LicenseMachines {
  /** Every machine of the license, in id order: one statement, read on each validation that names a fingerprint. */
  ofLicense(licenseId: string): Promise<LicenseMachine[]>;
  /** The components the license's machine with this fingerprint registered, in name order (none: empty). */
  componentsOf(licenseId: string, fingerprint: string): Promise<Component[]>;
  /** The signed lease token for the license's machine with this fingerprint; undefined when it is not activated. */
  leaseToken(licenseId: string, fingerprint: string): Promise<string | undefined>;
  /** The license's alive processes at `now`, by machine (machines without any left out): one statement. */
  aliveProcesses(licenseId: string, now: Date): Promise<MachineProcesses[]>;
  /**
   * In `em`'s transaction: the first fingerprint of the license's alive machines that an alive machine of another
   * license holds within `license.scope` (TransferLicense into a policy with a wider scope); undefined for none. Each
   * fingerprint stays locked against activations until the transaction ends.
   */
  fingerprintTaken(em: EntityManager, license: ScopedLicense): Promise<string | undefined>;
}

/** A hardware component of a machine (board, disk, CPU…), known by a fingerprint the SDK computes. */
export interface Component {
  name: string;
  fingerprint: string;
}

/** Components a request may give: as many as a machine may register. */
export const MAX_COMPONENTS = 32;

/**
 * The components a request gives, checked beyond the protovalidate rules (which say each one's name and
 * fingerprint): names unique. INVALID_ARGUMENT naming `field` otherwise. Returned in name order, as stored.
 */
export function checkedComponents(components: readonly Component[], field = "components"): Component[] {
  if (components.length > MAX_COMPONENTS)
    throw invalidArgument(field, `at most ${MAX_COMPONENTS} components`, "INVALID_COMPONENTS");
  const seen = new Set<string>();
  for (const [i, c] of components.entries()) {
    if (seen.has(c.name))
      throw invalidArgument(`${field}[${i}].name`, `${JSON.stringify(c.name)} is given twice`, "INVALID_COMPONENTS");
    seen.add(c.name);
  }
  return components
    .map((c) => ({ name: c.name, fingerprint: c.fingerprint }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
