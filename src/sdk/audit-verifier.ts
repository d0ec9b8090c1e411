/*
 * Client-side verification of licensd's audit log, trusting only the published public
 * signing keys (ActivationService.GetSigningKeys), never the server's word:
 *   - a checkpoint is signed by one of those keys;
 *   - an entry is in the tree a checkpoint describes (inclusion proof);
 *   - a later checkpoint extends an earlier one (consistency proof): history was
 *     appended to, not rewritten.
 */
import { checkpointText } from "../audit/checkpoint.js";
import { leafHash, verifyConsistency, verifyInclusion } from "../events/merkle.js";
import { verifyEd25519 } from "../platform/signing-keys.js";

export { entryHash } from "../events/events.js";

export interface CheckpointLike {
  tenantId: string;
  treeSize: number;
  rootHash: Uint8Array;
  signTime: Date;
  kid: string;
  signature: Uint8Array;
}

export interface PublicKeyLike {
  kid: string;
  publicKey: Uint8Array;
}

/** Is the checkpoint signed by the key it names, among `keys`? */
export function verifyCheckpoint(cp: CheckpointLike, keys: PublicKeyLike[]): boolean {
  const key = keys.find((k) => k.kid === cp.kid);
  if (!key) return false;
  return verifyEd25519(
    key.publicKey,
    Buffer.from(checkpointText(cp.tenantId, cp.treeSize, cp.rootHash, cp.signTime)),
    cp.signature,
  );
}

/** Is the entry whose hash is `entryHash` at `leafIndex` of the checkpoint's tree? */
export function verifyEntryInclusion(
  entryHash: Uint8Array,
  leafIndex: number,
  proof: Uint8Array[],
  cp: Pick<CheckpointLike, "treeSize" | "rootHash">,
): boolean {
  return verifyInclusion(leafHash(entryHash), leafIndex, cp.treeSize, proof, cp.rootHash);
}

/** Does `newer` extend `older` (same history, more entries)? */
export function verifyCheckpointConsistency(
  older: Pick<CheckpointLike, "treeSize" | "rootHash">,
  newer: Pick<CheckpointLike, "treeSize" | "rootHash">,
  proof: Uint8Array[],
): boolean {
  return verifyConsistency(older.treeSize, newer.treeSize, proof, older.rootHash, newer.rootHash);
}
