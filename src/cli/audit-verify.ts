import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { loadDevSecrets } from "../platform/dev-secrets.js";
import { auditEntryHash, leafHash, verifyCheckpoint, verifyConsistency, verifyInclusion } from "@licensd/client";
import path from "node:path";

interface SavedCheckpoint {
  tenantId: string;
  treeSize: number;
  rootHash: string;
}

/** `licensd audit verify`: prints each check and returns whether all passed. */
export async function verifyAuditLog(opts: {
  url: string;
  tenant: string;
  key?: string;
  state?: string;
  seq?: bigint;
  event?: string;
}): Promise<boolean> {
  let key = opts.key ?? process.env.LICENSD_SUPER_ADMIN_KEY;
  const secrets = path.resolve(process.env.LICENSD_DATA_DIR ?? ".licensd", "secrets.json");
  if (!key && existsSync(secrets)) key = loadDevSecrets(path.dirname(secrets)).superAdminKey;
  const auth: Interceptor = (next) => (req) => {
    if (key) req.header.set("authorization", `Bearer ${key}`);
    return next(req);
  };
  const transport = createConnectTransport({ baseUrl: opts.url, httpVersion: "1.1", interceptors: [auth] });
  const audit = createClient(AuditService, transport);
  const keys = (await createClient(ActivationService, transport).getSigningKeys({})).keys;
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
  const report = (passed: boolean, what: string) => {
    ok &&= passed;
    console.log(`${passed ? "ok  " : "FAIL"} ${what}`);
  };
  report(
    (await verifyCheckpoint(cp, keys)).verified,
    `checkpoint of ${cp.tenantId}: ${cp.treeSize} entries, ` +
      `root ${Buffer.from(cp.rootHash).toString("hex").slice(0, 16)}…, signed by ${cp.kid}`,
  );

  const saved: SavedCheckpoint | undefined =
    opts.state && existsSync(opts.state)
      ? (JSON.parse(readFileSync(opts.state, "utf8")) as SavedCheckpoint)
      : undefined;
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
  return ok;
}
