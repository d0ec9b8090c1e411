import { clone, fromBinary, toBinary, toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import canonicalize from "canonicalize";
import { affectedRows, sql, type Database, type EntityManager } from "./db.js";
import { type DataKeys, open, seal, sha256 } from "./crypto.js";
import { alreadyExists, failedPrecondition } from "./errors.js";
import type { Clock } from "./clock.js";

export interface IdempotentCall<I extends DescMessage, O extends DescMessage> {
  /** Tenant id, or `*` for the super-admin: keys never collide across tenants. */
  scope: string;
  /** `package.Service/Method`. */
  procedure: string;
  requestSchema: I;
  request: MessageShape<I> & { idempotencyKey: string };
  responseSchema: O;
}

export interface Idempotency {
  /**
   * Runs `fn` in one transaction. With an idempotency key, the first response is stored
   * in that same transaction; a retry with the same key and body returns it without
   * running `fn`, and the same key with another body is ALREADY_EXISTS. A concurrent
   * retry waits on the first call's row lock, then gets its response. Every response is
   * stored sealed under the data key (many hold a secret: API keys, license keys, leases).
   */
  run<I extends DescMessage, O extends DescMessage>(
    call: IdempotentCall<I, O>,
    fn: (em: EntityManager) => Promise<MessageShape<O>>,
  ): Promise<MessageShape<O>>;
  /** Deletes records older than the retention window; returns how many. */
  purge(): Promise<number>;
}

/** How long a key is remembered. */
export const IDEMPOTENCY_RETENTION_HOURS = 24;

/**
 * What a recorded response is sealed to (AES-GCM associated data): its row, so a sealed
 * response moved to another row, or a blob sealed for anything else, does not open.
 */
export const recordAad = (scope: string, procedure: string, key: string) =>
  JSON.stringify(["licensd idempotency record v1", scope, procedure, key]);

export function createIdempotency(db: Database, clock: Clock, dataKey: DataKeys): Idempotency {
  return {
    run(call, fn) {
      const key = call.request.idempotencyKey;
      if (key === "") return db.tx(fn);
      const digest = requestDigest(call.requestSchema, call.request);
      const aad = recordAad(call.scope, call.procedure, key);
      return db.tx(async (em) => {
        const inserted = await sql<{ key: string }>(
          em,
          `insert into idempotency_records (scope, procedure, key, request_digest, response_sealed, created_at)
           values ($1, $2, $3, $4, null, $5) on conflict do nothing returning key`,
          [call.scope, call.procedure, key, digest, clock.now()],
        );
        if (inserted.length === 0) {
          const [row] = await sql<{ request_digest: Buffer; response_sealed: Buffer | null }>(
            em,
            `select request_digest, response_sealed from idempotency_records
              where scope = $1 and procedure = $2 and key = $3`,
            [call.scope, call.procedure, key],
          );
          if (!row.request_digest.equals(digest)) {
            throw alreadyExists("IDEMPOTENCY_KEY_REUSED", "idempotency_key: already used with a different request", {
              field: "idempotency_key",
            });
          }
          if (row.response_sealed === null) {
            // Recorded in clear by an older licensd; the upgrade discarded the answer but kept the key spent.
            throw failedPrecondition(
              "IDEMPOTENCY_RESPONSE_DISCARDED",
              "idempotency_key: this call already ran, but its answer was recorded before licensd sealed recorded " +
                "answers and was discarded on upgrade; it was not run again (look its result up, or send a new key " +
                "to run it anew)",
              { field: "idempotency_key" },
            );
          }
          return fromBinary(call.responseSchema, open(dataKey, row.response_sealed, aad));
        }
        const response = await fn(em);
        await sql(
          em,
          `update idempotency_records set response_sealed = $1 where scope = $2 and procedure = $3 and key = $4`,
          [seal(dataKey, Buffer.from(toBinary(call.responseSchema, response)), aad), call.scope, call.procedure, key],
        );
        return response;
      });
    },
    async purge() {
      const cutoff = new Date(clock.now().getTime() - IDEMPOTENCY_RETENTION_HOURS * 3_600_000);
      return affectedRows(db, `delete from idempotency_records where created_at < $1`, [cutoff]);
    },
  };
}

/** SHA-256 of the request's canonical JSON (RFC 8785), its idempotency key left out. */
function requestDigest<I extends DescMessage>(
  schema: I,
  request: MessageShape<I> & { idempotencyKey: string },
): Buffer {
  const copy = clone(schema, request) as MessageShape<I> & { idempotencyKey: string };
  copy.idempotencyKey = "";
  return sha256(canonicalize(toJson(schema, copy)) ?? "");
}
