import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  ActivationService,
  AuditService,
  auditEntryHash,
  leafHash,
  verifyCheckpoint,
  verifyConsistency,
  verifyInclusion,
} from "@licensd/client";
import { CliFailure, type Context, EXIT } from "./runtime.js";

interface SavedCheckpoint {
  tenantId: string;
  treeSize: number;
  rootHash: string;
}

function readSaved(file: string): SavedCheckpoint {
  try {
    const saved = JSON.parse(readFileSync(file, "utf8")) as SavedCheckpoint;
    if (typeof saved.tenantId === "string" && Number.isInteger(saved.treeSize) && typeof saved.rootHash === "string")
      return saved;
  } catch {
    // Reported below.
  }
  throw new CliFailure(`--state ${file}: not a checkpoint saved by audit verify`, EXIT.usage, "give another file");
}

/**
 * `licensd audit verify`: checks the tenant's signed checkpoint, its consistency with the one saved by the last run,
 * and optionally an entry's inclusion. Returns each check, in order.
 */
export async function verifyAuditLog(
  ctx: Context,
  opts: { tenant: string; state?: string; seq?: bigint; event?: string },
): Promise<{ ok: boolean; checks: { ok: boolean; check: string }[] }> {
  const audit = ctx.client(AuditService);
  const keys = (await ctx.client(ActivationService).getSigningKeys({})).keys;
  const cp = (await audit.getCheckpoint({ tenantId: opts.tenant })).checkpoint!;
  const checkpoint = {
    tenantId: cp.tenantId,
    treeSize: Number(cp.treeSize),
    rootHash: cp.rootHash,
    signTime: timestampDate(cp.signTime!),
    kid: cp.kid,
    signature: cp.signature,
  };
  let ok = true;
  const checks: { ok: boolean; check: string }[] = [];
  const report = (passed: boolean, what: string) => {
    ok &&= passed;
    checks.push({ ok: passed, check: what });
  };
  report(
    (await verifyCheckpoint(cp, keys)).verified,
    `checkpoint of ${cp.tenantId}: ${cp.treeSize} entries, ` +
      `root ${Buffer.from(cp.rootHash).toString("hex").slice(0, 16)}…, signed by ${cp.kid}`,
  );

  const saved = opts.state && existsSync(opts.state) ? readSaved(opts.state) : undefined;
  if (saved && saved.tenantId === cp.tenantId) {
    if (saved.treeSize > checkpoint.treeSize) {
      report(
        false,
        `the log shrank from ${saved.treeSize} to ${checkpoint.treeSize} entries since the saved checkpoint`,
      );
    } else if (saved.treeSize > 0) {
      const proof = await audit.getConsistencyProof({
        tenantId: opts.tenant,
        oldSize: BigInt(saved.treeSize),
        newSize: cp.treeSize,
      });
      const older = { treeSize: saved.treeSize, rootHash: Buffer.from(saved.rootHash, "base64") };
      report(
        verifyConsistency(older.treeSize, checkpoint.treeSize, proof.hashes, older.rootHash, checkpoint.rootHash),
        `consistent with the saved checkpoint of ${saved.treeSize} entries (history only appended to)`,
      );
    }
  }
  if (opts.seq !== undefined) {
    const proof = await audit.getInclusionProof({ tenantId: opts.tenant, seq: opts.seq, treeSize: cp.treeSize });
    report(
      verifyInclusion(
        leafHash(proof.entryHash),
        Number(proof.leafIndex),
        checkpoint.treeSize,
        proof.hashes,
        checkpoint.rootHash,
      ),
      `entry ${opts.seq} is in the signed tree`,
    );
  }
  if (opts.event !== undefined) {
    // The entry as the server shows it, hashed here from its fields (docs/formats.md), so the
    // proof is about this content and not about a hash the server merely asserts.
    const e = (await audit.getAuditEvent({ tenantId: opts.tenant, id: opts.event })).event!;
    const hash = Buffer.from(auditEntryHash(e));
    const proof = await audit.getInclusionProof({ tenantId: opts.tenant, seq: e.seq, treeSize: cp.treeSize });
    const included =
      Buffer.from(proof.entryHash).equals(hash) &&
      verifyInclusion(leafHash(hash), Number(proof.leafIndex), checkpoint.treeSize, proof.hashes, checkpoint.rootHash);
    report(
      included,
      `entry ${e.id} (seq ${e.seq}, ${e.type}) hashes to ${hash.toString("hex").slice(0, 16)}… ` +
        "and is in the signed tree",
    );
  }
  if (ok && opts.state) {
    const next: SavedCheckpoint = {
      tenantId: cp.tenantId,
      treeSize: checkpoint.treeSize,
      rootHash: Buffer.from(cp.rootHash).toString("base64"),
    };
    writeFileSync(opts.state, JSON.stringify(next, null, 2));
  }
  return { ok, checks };
}
