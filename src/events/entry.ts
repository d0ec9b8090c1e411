import canonicalize from "canonicalize";
import { sha256 } from "../platform/crypto.js";

/** The channel every sequenced audit entry is announced on (payload `tenant_id:seq`, the batch's last). */
export const AUDIT_CHANNEL = "licensd_audit";

export const GENESIS_HASH = Buffer.alloc(32);

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** The fields an entry's hash covers. */
export interface EntryFields {
  tenantId: string;
  seq: number;
  id: string;
  type: string;
  subject: string;
  actor: string;
  payload: unknown;
  occurredAt: Date;
  prevHash: Uint8Array;
}

/** SHA-256 over the RFC 8785 canonical JSON of the entry's fields (documented in the proto). */
export function entryHash(e: EntryFields): Buffer {
  const canonical = canonicalize({
    tenant_id: e.tenantId,
    seq: e.seq,
    id: e.id,
    type: e.type,
    subject: e.subject,
    actor: e.actor,
    payload: e.payload,
    occurred_at: e.occurredAt.toISOString(),
    prev_hash: Buffer.from(e.prevHash).toString("hex"),
  });
  return sha256(canonical!);
}
