import type { Clock } from "../platform/clock.js";
import type { Database, EntityManager } from "../platform/db.js";
import { failedPrecondition, invalidArgument, notFound } from "../platform/errors.js";
import type { SigningKeyStore } from "../platform/signing-keys.js";
import { verifyEd25519 } from "../platform/signing-keys.js";
import type { Page } from "../platform/pagination.js";
import type { AuditKeyring } from "../events/audit-keyring.js";
import { entryHash, GENESIS_HASH, type Events } from "../events/events.js";
import type { AuditFeed } from "../events/audit-feed.js";
import {
  chainRows,
  cutThrough,
  ENTRIES_PAGE,
  entriesFrom,
  entryById,
  entryHashAt,
  headSeq,
  lastSeqBefore,
  latestCut,
  latestCuts,
  addCutSignature,
  listEntries,
  treeNodes,
  type AuditEntry,
  type AuditFilters,
  type NodeKey,
} from "../events/log-store.js";
import { checkpointText, cutText } from "./checkpoint.js";
import {
  consistencyProof,
  EMPTY_ROOT,
  inclusionProof,
  leafHash,
  nodeHash,
  rootHash,
  withNodes,
  type PerfectNode,
} from "../events/merkle.js";

export type ChainProblem = "HASH_MISMATCH" | "BROKEN_LINK" | "BAD_SIGNATURE" | "MISSING_SEQ" | "TREE_MISMATCH";

export interface ChainReport {
  valid: boolean;
  eventsChecked: number;
  firstBadSeq: number;
  problem?: ChainProblem;
  detail: string;
  startSeq: number;
  endSeq: number;
}

export interface SignedCheckpoint {
  tenantId: string;
  treeSize: number;
  rootHash: Buffer;
  signTime: Date;
  kid: string;
  signature: Buffer;
  signedText: string;
}

export type TailItem = { event: AuditEntry } | { keepAlive: number };

/**
 * Reading, tailing, proving and pruning the audit log: verification, proofs, checkpoint
 * and cut signing. The statements over the log's tables are events/log-store.ts's.
 */
export function createAuditService(deps: {
  db: Database;
  clock: Clock;
  keyring: AuditKeyring;
  signingKeys: SigningKeyStore;
  feed: AuditFeed;
  events: Events;
}) {
  const { db, clock, keyring, signingKeys, feed, events } = deps;

  const nodeFetcher = (em: EntityManager, tenantId: string) => (keys: NodeKey[]) => treeNodes(em, tenantId, keys);

  const computeWithTree = <T>(em: EntityManager, tenantId: string, compute: (node: PerfectNode) => T) =>
    withNodes(compute, nodeFetcher(em, tenantId));

  // A rotation signs every tenant's latest retention cut again with the new key, in its transaction: once the key that
  // made a cut retires (or is withdrawn after a leak), a chain that starts at the cut still verifies.
  signingKeys.onRotate(async (em, newKey) => {
    const at = clock.now();
    for (const cut of await latestCuts(em)) {
      const text = Buffer.from(cutText(cut.tenantId, cut.seq, cut.hash, cut.cutAt));
      await addCutSignature(em, cut.tenantId, cut.seq, { kid: newKey.kid, signature: newKey.sign(text) }, at);
    }
  });

  return {
    async list(
      em: EntityManager,
      tenantId: string,
      filters: AuditFilters,
      page: Page,
      newestFirst: boolean,
    ): Promise<AuditEntry[]> {
      return listEntries(em, tenantId, filters, page, newestFirst);
    },

    async get(em: EntityManager, tenantId: string, id: string): Promise<AuditEntry> {
      const entry = await entryById(em, tenantId, id);
      if (!entry) throw notFound("audit_event", id);
      return entry;
    },

    /** Recomputes every entry of [start, end]; reports the first that is wrong. */
    async verify(em: EntityManager, tenantId: string, startSeq: number, endSeq: number): Promise<ChainReport> {
      const head = await headSeq(em, tenantId);
      const cut = await latestCut(em, tenantId);
      const floor = cut ? cut.seq + 1 : 1;
      const start = startSeq === 0 ? floor : startSeq;
      const end = endSeq === 0 ? head : endSeq;
      if (start < floor)
        throw invalidArgument("start_seq", `entries before ${floor} were removed by retention`, "PRUNED");
      if (end > head) throw invalidArgument("end_seq", `the log ends at ${head}`, "OUT_OF_RANGE");
      const report = (r: Omit<ChainReport, "startSeq" | "endSeq">): ChainReport => ({
        ...r,
        startSeq: start,
        endSeq: end,
      });
      if (start > end) return report({ valid: true, eventsChecked: 0, firstBadSeq: 0, detail: "empty range" });

      let expectedPrev: Buffer;
      if (start === floor && cut) {
        const text = Buffer.from(cutText(tenantId, cut.seq, cut.hash, cut.cutAt));
        // The cut's own signature, or one made again at a later rotation: any by a published key will do.
        const signed = [{ kid: cut.kid, signature: cut.signature }, ...(cut.resigned ?? [])].some((sig) => {
          const key = signingKeys.publicKeys().find((k) => k.kid === sig.kid);
          return key !== undefined && verifyEd25519(key.publicKey, text, sig.signature);
        });
        if (!signed) {
          return report({
            valid: false,
            eventsChecked: 0,
            firstBadSeq: start,
            problem: "BROKEN_LINK",
            detail: `the retention cut at ${cut.seq} is not signed by a known key`,
          });
        }
        expectedPrev = cut.hash;
      } else if (start === 1) {
        expectedPrev = GENESIS_HASH;
      } else {
        const prev = await entryHashAt(em, tenantId, start - 1);
        if (!prev)
          return report({
            valid: false,
            eventsChecked: 0,
            firstBadSeq: start - 1,
            problem: "MISSING_SEQ",
            detail: `entry ${start - 1} is missing`,
          });
        expectedPrev = prev;
      }

      let checked = 0;
      let expectedSeq = start;
      // Perfect subtrees rebuilt from the leaves of the range, checked against the stored
      // tree: an entry can't be swapped for another with a consistent-looking tree.
      const stack: { level: number; index: number; hash: Buffer }[] = [];
      const BATCH = 2000;
      while (expectedSeq <= end) {
        const rows = await chainRows(em, tenantId, expectedSeq, end, BATCH);
        if (rows.length === 0) break;
        const rebuilt: { level: number; index: number; hash: Buffer; seq: number }[] = [];
        for (const row of rows) {
          const e = row.entry;
          const bad = (problem: ChainProblem, detail: string, seq = e.seq) =>
            report({ valid: false, eventsChecked: checked, firstBadSeq: seq, problem, detail });
          if (e.seq !== expectedSeq)
            return bad("MISSING_SEQ", `entry ${expectedSeq} is missing (next present is ${e.seq})`, expectedSeq);
          if (!entryHash(e).equals(e.hash))
            return bad("HASH_MISMATCH", `entry ${e.seq}: stored hash does not match its contents`);
          if (!e.prevHash.equals(expectedPrev))
            return bad("BROKEN_LINK", `entry ${e.seq}: prev_hash is not the hash of entry ${e.seq - 1}`);
          if (!keyring.verify(e.kid, e.hash, e.signature))
            return bad("BAD_SIGNATURE", `entry ${e.seq}: signature does not verify under key ${e.kid}`);
          const leaf = leafHash(e.hash);
          if (!row.leaf || !leaf.equals(row.leaf))
            return bad("TREE_MISMATCH", `entry ${e.seq} is not the leaf the Merkle tree recorded`);
          stack.push({ level: 0, index: e.seq - 1, hash: leaf });
          while (stack.length >= 2) {
            const right = stack[stack.length - 1];
            const left = stack[stack.length - 2];
            if (left.level !== right.level || left.index % 2 !== 0 || right.index !== left.index + 1) break;
            stack.splice(-2, 2, {
              level: left.level + 1,
              index: left.index / 2,
              hash: nodeHash(left.hash, right.hash),
            });
            rebuilt.push({ ...stack[stack.length - 1], seq: e.seq });
          }
          checked++;
          expectedPrev = e.hash;
          expectedSeq++;
        }
        const stored = await nodeFetcher(em, tenantId)(rebuilt);
        const wrong = rebuilt.find((n) => !stored.get(`${n.level}:${n.index}`)?.equals(n.hash));
        if (wrong) {
          const first = wrong.index * 2 ** wrong.level + 1;
          return report({
            valid: false,
            eventsChecked: checked,
            firstBadSeq: wrong.seq,
            problem: "TREE_MISMATCH",
            detail: `the Merkle tree's node over entries ${first}–${wrong.seq} does not match them`,
          });
        }
      }
      if (expectedSeq <= end) {
        return report({
          valid: false,
          eventsChecked: checked,
          firstBadSeq: expectedSeq,
          problem: "MISSING_SEQ",
          detail: `entry ${expectedSeq} is missing`,
        });
      }
      return report({ valid: true, eventsChecked: checked, firstBadSeq: 0, detail: `${checked} entries verified` });
    },

    /**
     * Entries after `afterSeq` (undefined: from now) in seq order, then live ones; a
     * keep-alive every `keepAliveMs` while nothing matches. Commits are in seq order
     * (the head lock), so reading `seq > cursor` never skips an entry.
     */
    async *tail(
      tenantId: string,
      opts: { afterSeq?: number; filters: AuditFilters; keepAliveMs: number },
      signal: AbortSignal,
    ): AsyncGenerator<TailItem> {
      let cursor = opts.afterSeq ?? (await headSeq(db.em(), tenantId));
      const matches = (e: AuditEntry) =>
        (!opts.filters.subject || e.subject === opts.filters.subject) &&
        (!opts.filters.typePrefix || e.type.startsWith(opts.filters.typePrefix));
      let idleSince = Date.now();
      while (!signal.aborted) {
        const rows = await entriesFrom(db, tenantId, cursor);
        for (const e of rows) {
          cursor = e.seq;
          if (matches(e)) {
            idleSince = Date.now();
            yield { event: e };
          }
        }
        if (rows.length === ENTRIES_PAGE) continue;
        const wait = opts.keepAliveMs - (Date.now() - idleSince);
        if (wait <= 0) {
          idleSince = Date.now();
          yield { keepAlive: cursor };
          continue;
        }
        await feed.waitFor(tenantId, cursor, wait, signal);
      }
    },

    async checkpoint(em: EntityManager, tenantId: string): Promise<SignedCheckpoint> {
      const size = await headSeq(em, tenantId);
      const root = size === 0 ? EMPTY_ROOT : await computeWithTree(em, tenantId, (node) => rootHash(size, node));
      const signTime = clock.now();
      const signedText = checkpointText(tenantId, size, root, signTime);
      const { kid, signature } = signingKeys.sign(Buffer.from(signedText));
      return { tenantId, treeSize: size, rootHash: root, signTime, kid, signature, signedText };
    },

    async inclusion(em: EntityManager, tenantId: string, seq: number, treeSize: number) {
      const head = await headSeq(em, tenantId);
      const size = treeSize === 0 ? head : treeSize;
      if (size > head) throw invalidArgument("tree_size", `the log has ${head} entries`, "OUT_OF_RANGE");
      if (seq > size) throw invalidArgument("seq", `must be at most the tree size (${size})`, "OUT_OF_RANGE");
      const hashes = await computeWithTree(em, tenantId, (node) => inclusionProof(seq - 1, size, node));
      const hash = await entryHashAt(em, tenantId, seq);
      return { leafIndex: seq - 1, treeSize: size, entryHash: hash ?? Buffer.alloc(0), hashes };
    },

    async consistency(em: EntityManager, tenantId: string, oldSize: number, newSize: number) {
      const head = await headSeq(em, tenantId);
      const size = newSize === 0 ? head : newSize;
      if (size > head) throw invalidArgument("new_size", `the log has ${head} entries`, "OUT_OF_RANGE");
      if (oldSize > size) throw invalidArgument("old_size", `must be at most new_size (${size})`, "OUT_OF_RANGE");
      const hashes = await computeWithTree(em, tenantId, (node) => consistencyProof(oldSize, size, node));
      return { oldSize, newSize: size, hashes };
    },

    /**
     * The documented retention job, inside the caller's transaction: removes entries
     * 1..throughSeq of a tenant's log (or every entry that occurred before `olderThan`),
     * keeping a signed record of where it cut (and the Merkle tree, so proofs and
     * checkpoints still cover the whole history). The cut itself is an audit entry.
     */
    async prune(
      em: EntityManager,
      tenantId: string,
      actor: string,
      what: { throughSeq: number } | { olderThan: Date },
    ): Promise<{ removed: number; throughSeq: number }> {
      let throughSeq: number;
      if ("throughSeq" in what) {
        throughSeq = what.throughSeq;
      } else {
        const last = await lastSeqBefore(em, tenantId, what.olderThan);
        if (last === null) return { removed: 0, throughSeq: 0 };
        throughSeq = last;
      }
      const hash = await entryHashAt(em, tenantId, throughSeq);
      if (!hash)
        throw failedPrecondition(
          "NOTHING_TO_CUT",
          `entry ${throughSeq} is not in the log (already cut, or not written yet)`,
          { field: "through_seq" },
        );
      const cutAt = clock.now();
      const { kid, signature } = signingKeys.sign(Buffer.from(cutText(tenantId, throughSeq, hash, cutAt)));
      const removed = await cutThrough(em, tenantId, { seq: throughSeq, hash, cutAt, kid, signature });
      await events.emit(em, {
        tenantId,
        type: "audit.retention.cut",
        subject: tenantId,
        actor,
        payload: { through_seq: throughSeq, removed },
      });
      return { removed, throughSeq };
    },
  };
}

export type AuditService = ReturnType<typeof createAuditService>;
