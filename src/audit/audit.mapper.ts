import { create } from "@bufbuild/protobuf";
import type { JsonObject } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AuditEventSchema, CheckpointSchema } from "../../gen/ts/licensd/audit/v1/audit_event_pb.js";
import { ChainProblem } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import type { AuditEntry } from "../events/log-store.js";
import type { ChainProblem as Problem, SignedCheckpoint } from "./audit.service.js";

export const auditEventToProto = (e: AuditEntry) =>
  create(AuditEventSchema, {
    id: e.id,
    tenantId: e.tenantId,
    seq: BigInt(e.seq),
    type: e.type,
    subject: e.subject,
    actor: e.actor,
    payload: e.payload as JsonObject,
    occurTime: timestampFromDate(e.occurredAt),
    prevHash: e.prevHash,
    hash: e.hash,
    kid: e.kid,
    signature: e.signature,
  });

export const checkpointToProto = (c: SignedCheckpoint) =>
  create(CheckpointSchema, {
    tenantId: c.tenantId,
    treeSize: BigInt(c.treeSize),
    rootHash: c.rootHash,
    signTime: timestampFromDate(c.signTime),
    kid: c.kid,
    signature: c.signature,
    signedText: c.signedText,
  });

export const problemToProto = (p: Problem | undefined): ChainProblem =>
  p ? ChainProblem[p] : ChainProblem.UNSPECIFIED;
