/*
 * Checking licensd's audit log from outside, trusting only the published signing keys
 * (docs/formats.md, "Audit log entries", "Merkle tree", "Checkpoints"):
 *   - a checkpoint (signed tree head) is signed by one of those keys;
 *   - an entry is in the tree a checkpoint describes (inclusion proof);
 *   - a checkpoint extends an earlier one (consistency proof): history was only appended to.
 * Messages from a generated client and their proto3 JSON (Connect JSON, curl) both work.
 */
import { fromJson, isMessage, type JsonObject } from "@bufbuild/protobuf";
import { sha256 } from "@noble/hashes/sha2.js";
import canonicalize from "canonicalize";
import {
  type AuditEvent,
  AuditEventSchema,
  type Checkpoint,
  CheckpointSchema,
} from "../../gen/licensd/audit/v1/audit_event_pb.js";
import {
  type GetConsistencyProofResponse,
  GetConsistencyProofResponseSchema,
  type GetInclusionProofResponse,
  GetInclusionProofResponseSchema,
} from "../../gen/licensd/audit/v1/audit_service_pb.js";
import { toBase64, toHex, utf8 } from "./bytes.js";
import { verifyEd25519 } from "./ed25519.js";
import { lookupKey, type Keys } from "./keys.js";
import { EMPTY_ROOT, leafHash, verifyConsistency, verifyInclusion } from "./merkle.js";

/** A checkpoint's signed fields, read. */
export interface CheckpointFields {
  tenantId: string;
  treeSize: number;
  rootHash: Uint8Array;
  signTime: Date;
  kid: string;
  signature: Uint8Array;
}

export type AuditProofCode =
  | "VERIFIED"
  /** The checkpoint, entry or proof could not be read. */
  | "MALFORMED"
  | "UNKNOWN_KEY"
  | "KEYS_UNAVAILABLE"
  /** The checkpoint's signature does not verify. */
  | "BAD_SIGNATURE"
  /** The entry is not in the checkpoint's tree (or the proof is for another entry, tree or tenant). */
  | "NOT_INCLUDED"
  /** The checkpoint does not extend the older one: history was rewritten, or the proof is wrong. */
  | "NOT_CONSISTENT";

export interface AuditProofResult {
  verified: boolean;
  code: AuditProofCode;
  /** The checkpoint's fields once read (trust them only when verified). */
  checkpoint?: CheckpointFields;
}

type JsonOr<T> = T | JsonObject;

const int = (v: bigint | number | string | undefined): number => {
  const n = Number(v ?? 0);
  if (!Number.isSafeInteger(n) || n < 0) throw new TypeError(`not a size or index: ${String(v)}`);
  return n;
};

const timeMs = (t: { seconds: bigint; nanos: number } | undefined): number =>
  t === undefined ? Number.NaN : Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6);

/** The message itself, or read from its proto3 JSON; a TypeError when it is neither. */
function message<T>(value: unknown, schema: Parameters<typeof fromJson>[0]): T {
  if (isMessage(value, schema)) return value as T;
  if (typeof value !== "object" || value === null || Array.isArray(value) || ArrayBuffer.isView(value))
    throw new TypeError(`not a ${schema.typeName}`);
  try {
    return fromJson(schema, value as JsonObject, { ignoreUnknownFields: true }) as T;
  } catch (err) {
    throw new TypeError(`not a ${schema.typeName}: ${(err as Error).message}`);
  }
}

/** Reads a Checkpoint (message or proto3 JSON); throws a TypeError when it is not one. */
export function readCheckpoint(checkpoint: JsonOr<Checkpoint>): CheckpointFields {
  const c = message<Checkpoint>(checkpoint, CheckpointSchema);
  const signTime = timeMs(c.signTime);
  if (!Number.isFinite(signTime)) throw new TypeError("checkpoint: no sign_time");
  return {
    tenantId: c.tenantId,
    treeSize: int(c.treeSize),
    rootHash: c.rootHash,
    signTime: new Date(signTime),
    kid: c.kid,
    signature: c.signature,
  };
}

/** The text a checkpoint's signature covers, rebuilt from its fields (never the `signedText` sent along). */
export const checkpointText = (c: Pick<CheckpointFields, "tenantId" | "treeSize" | "rootHash" | "signTime">) =>
  `licensd.dev/audit/v1\n${c.tenantId}\n${c.treeSize}\n${toBase64(c.rootHash)}\n${c.signTime.getTime()}\n`;

/**
 * The hash of an audit entry (an AuditEvent message or its proto3 JSON), computed from its
 * fields: SHA-256 of the JCS of the nine hashed members. Throws a TypeError for input that
 * is not an audit event.
 */
export function auditEntryHash(event: JsonOr<AuditEvent>): Uint8Array {
  const e = message<AuditEvent>(event, AuditEventSchema);
  const occurred = timeMs(e.occurTime);
  if (!Number.isFinite(occurred)) throw new TypeError("audit event: no occur_time");
  const canonical = canonicalize({
    tenant_id: e.tenantId,
    seq: int(e.seq),
    id: e.id,
    type: e.type,
    subject: e.subject,
    actor: e.actor,
    payload: e.payload ?? {},
    // Always three fraction digits, whatever the API's Timestamp JSON wrote.
    occurred_at: new Date(occurred).toISOString(),
    prev_hash: toHex(e.prevHash),
  });
  if (canonical === undefined) throw new TypeError("audit event: cannot be canonicalized");
  return sha256(utf8(canonical));
}

/** Is the checkpoint signed by the published key it names? The promise never rejects. */
export async function verifyCheckpoint(checkpoint: JsonOr<Checkpoint>, keys: Keys): Promise<AuditProofResult> {
  let cp: CheckpointFields;
  try {
    cp = readCheckpoint(checkpoint);
  } catch {
    return { verified: false, code: "MALFORMED" };
  }
  const found = await lookupKey(keys, cp.kid);
  if (!found.ok) return { verified: false, code: found.code, checkpoint: cp };
  const good = await verifyEd25519(found.key.publicKey, utf8(checkpointText(cp)), cp.signature);
  return { verified: good, code: good ? "VERIFIED" : "BAD_SIGNATURE", checkpoint: cp };
}

export interface AuditProofInput {
  /** The signed checkpoint the proofs are checked against (GetCheckpoint). */
  checkpoint: JsonOr<Checkpoint>;
  keys: Keys;
  /** An entry, and GetInclusionProof's answer for it at the checkpoint's tree size. */
  inclusion?: {
    /** The entry as you hold it (the leaf is computed from it), or its 32-byte hash. */
    entry: JsonOr<AuditEvent> | Uint8Array;
    proof: JsonOr<GetInclusionProofResponse>;
  };
  /** An older checkpoint you trusted before, and GetConsistencyProof's answer from its size to this one's. */
  consistency?: {
    older: JsonOr<Checkpoint> | { treeSize: number | bigint; rootHash: Uint8Array; tenantId?: string };
    proof: JsonOr<GetConsistencyProofResponse>;
  };
}

type Older = { treeSize: number; rootHash: Uint8Array; tenantId?: string };

function readOlder(older: NonNullable<AuditProofInput["consistency"]>["older"]): Older {
  const plain = older as { treeSize?: unknown; rootHash?: unknown; tenantId?: unknown };
  if (!isMessage(older) && plain?.rootHash instanceof Uint8Array) {
    return {
      treeSize: int(plain.treeSize as number | bigint),
      rootHash: plain.rootHash,
      tenantId: typeof plain.tenantId === "string" ? plain.tenantId : undefined,
    };
  }
  const c = message<Checkpoint>(older, CheckpointSchema);
  return { treeSize: int(c.treeSize), rootHash: c.rootHash, tenantId: c.tenantId };
}

/**
 * Verifies a signed checkpoint, then the proofs given against it: that an entry is in
 * its tree, and/or that it extends an older checkpoint. The promise never rejects.
 */
export async function verifyAuditProof(input: AuditProofInput): Promise<AuditProofResult> {
  if (!input || (!input.inclusion && !input.consistency)) return { verified: false, code: "MALFORMED" };
  const signed = await verifyCheckpoint(input.checkpoint, input.keys);
  if (!signed.verified) return signed;
  const cp = signed.checkpoint!;
  const fail = (code: AuditProofCode): AuditProofResult => ({ verified: false, code, checkpoint: cp });

  if (input.inclusion) {
    let entryHash: Uint8Array;
    let leafIndex: number;
    let hashes: Uint8Array[];
    let proofSize: number;
    let tenantId: string | undefined;
    let seq: number | undefined;
    try {
      const { entry } = input.inclusion;
      if (entry instanceof Uint8Array) {
        entryHash = entry;
      } else {
        const e = message<AuditEvent>(entry, AuditEventSchema);
        entryHash = auditEntryHash(e);
        tenantId = e.tenantId;
        seq = int(e.seq);
      }
      const p = message<GetInclusionProofResponse>(input.inclusion.proof, GetInclusionProofResponseSchema);
      leafIndex = int(p.leafIndex);
      hashes = p.hashes;
      proofSize = int(p.treeSize);
    } catch {
      return fail("MALFORMED");
    }
    if (entryHash.length !== 32) return fail("MALFORMED");
    if (tenantId !== undefined && tenantId !== cp.tenantId) return fail("NOT_INCLUDED");
    if (seq !== undefined && seq !== leafIndex + 1) return fail("NOT_INCLUDED");
    if (proofSize !== 0 && proofSize !== cp.treeSize) return fail("NOT_INCLUDED");
    if (!verifyInclusion(leafHash(entryHash), leafIndex, cp.treeSize, hashes, cp.rootHash)) return fail("NOT_INCLUDED");
  }

  if (input.consistency) {
    let older: Older;
    let hashes: Uint8Array[];
    try {
      older = readOlder(input.consistency.older);
      hashes = message<GetConsistencyProofResponse>(input.consistency.proof, GetConsistencyProofResponseSchema).hashes;
    } catch {
      return fail("MALFORMED");
    }
    if (older.tenantId !== undefined && older.tenantId !== "" && older.tenantId !== cp.tenantId)
      return fail("NOT_CONSISTENT");
    // Every tree extends the empty one, whose root is fixed.
    const consistent =
      older.treeSize === 0
        ? toHex(older.rootHash) === toHex(EMPTY_ROOT)
        : verifyConsistency(older.treeSize, cp.treeSize, hashes, older.rootHash, cp.rootHash);
    if (!consistent) return fail("NOT_CONSISTENT");
  }
  return signed;
}
