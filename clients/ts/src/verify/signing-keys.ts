/*
 * The Ed25519 public keys licensd signs with, fetched from ActivationService.GetSigningKeys
 * (public; a Connect GET any HTTP cache may keep for 60 s), kept for a TTL, and refetched
 * at once, past HTTP caches, when a token names a kid not yet known (a rotation). Keys
 * follow the server's rules (docs/formats.md, "Keys and secrets"): the active key and the
 * retiring ones verify; a key whose `not_after` has passed verifies nothing, even from
 * the cache. Pinned keys are used as given and nothing is fetched.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { ActivationService } from "../../gen/licensd/activation/v1/activation_service_pb.js";
import { SigningKeyStatus } from "../../gen/licensd/activation/v1/signing_key_pb.js";
import type { KeySource, PublicKey } from "./keys.js";

/** A key as licensd publishes it. */
export interface PublishedKey extends PublicKey {
  status: "active" | "retiring";
  notBefore?: Date;
  /** Unset while active; after it the key verifies nothing. */
  notAfter?: Date;
}

export interface SigningKeysOptions {
  /** licensd's base URL (e.g. `https://licensd.example.com`); keys are fetched with `fetch` over Connect. */
  baseUrl?: string;
  /** The fetch to use; defaults to the global one. */
  fetch?: typeof globalThis.fetch;
  /** Instead of baseUrl: any Connect transport (gRPC, gRPC-Web, a test's router transport). */
  transport?: Transport;
  /** Keys fixed in the product: used as given, never fetched nor expired. Excludes baseUrl and transport. */
  pinned?: readonly PublicKey[];
  /** How long fetched keys are used before they are fetched again; default 10 minutes. */
  ttlMs?: number;
  /** The least time between two fetches, so a flood of unknown kids cannot flood licensd; default 30 s. */
  minRefetchIntervalMs?: number;
  /** Defaults to the current time. */
  now?: () => Date;
}

/** The keys could not be fetched and none are cached. */
export class SigningKeysUnavailableError extends Error {
  override readonly name = "SigningKeysUnavailableError";
}

export class SigningKeys implements KeySource {
  private readonly client?: ReturnType<typeof createClient<typeof ActivationService>>;
  private readonly pinned?: readonly PublicKey[];
  private readonly ttlMs: number;
  private readonly minRefetchIntervalMs: number;
  private readonly now: () => Date;
  private cache?: { keys: PublishedKey[]; at: number };
  private lastAttempt = Number.NEGATIVE_INFINITY;
  private lastError?: SigningKeysUnavailableError;
  private fetching?: Promise<PublishedKey[]>;

  constructor(opts: SigningKeysOptions) {
    const sources = [opts?.baseUrl, opts?.transport, opts?.pinned].filter((s) => s !== undefined).length;
    if (sources !== 1) throw new TypeError("SigningKeys: give exactly one of baseUrl, transport or pinned");
    this.ttlMs = opts.ttlMs ?? 10 * 60_000;
    this.minRefetchIntervalMs = opts.minRefetchIntervalMs ?? 30_000;
    this.now = opts.now ?? (() => new Date());
    if (opts.pinned) {
      for (const k of opts.pinned)
        if (typeof k?.kid !== "string" || !(k.publicKey instanceof Uint8Array) || k.publicKey.length !== 32)
          throw new TypeError("SigningKeys: a pinned key needs a kid and a 32-byte publicKey");
      this.pinned = [...opts.pinned];
      return;
    }
    const transport =
      opts.transport ??
      createConnectTransport({ baseUrl: opts.baseUrl!, fetch: opts.fetch, useHttpGet: true, useBinaryFormat: false });
    this.client = createClient(ActivationService, transport);
  }

  /** The key named `kid` that may verify now; refetches (rate-limited) when it is not known. */
  async key(kid: string): Promise<PublicKey | undefined> {
    if (this.pinned) return this.pinned.find((k) => k.kid === kid);
    const found = (await this.list()).find((k) => k.kid === kid);
    if (found || this.msSinceAttempt() < this.minRefetchIntervalMs) return found;
    // Unknown kid: the keys may have rotated since they were fetched. Ask licensd, past HTTP caches.
    const fresh = await this.fetchOnce(true).catch(() => undefined);
    return fresh ? this.usable(fresh).find((k) => k.kid === kid) : undefined;
  }

  /** The keys that verify now, fetched when there are none or they are older than the TTL. */
  async list(): Promise<PublishedKey[]> {
    if (this.pinned) return this.pinned.map((k) => ({ ...k, status: "active" as const }));
    const age = this.cache ? this.now().getTime() - this.cache.at : Number.POSITIVE_INFINITY;
    // With licensd down and nothing cached, every check would ask again: fail fast until the interval has passed.
    if (!this.cache && this.lastError && this.msSinceAttempt() < this.minRefetchIntervalMs) throw this.lastError;
    if (!this.cache || (age >= this.ttlMs && this.msSinceAttempt() >= this.minRefetchIntervalMs)) {
      try {
        await this.fetchOnce(false);
      } catch (err) {
        // Keys fetched before stay good until their not_after: serve them while licensd is away.
        if (!this.cache) throw err;
      }
    }
    return this.usable(this.cache!.keys);
  }

  /** Fetches the keys now (past HTTP caches), whatever the TTL; rejects with SigningKeysUnavailableError. */
  async refresh(): Promise<PublishedKey[]> {
    return this.usable(await this.fetchOnce(true));
  }

  private msSinceAttempt() {
    return this.now().getTime() - this.lastAttempt;
  }

  /**
   * The keys whose not_after has not passed. not_before is not checked: a client clock a
   * little behind licensd's would refuse a key just rotated in, and licensd publishes a key
   * only once it may sign.
   */
  private usable(keys: PublishedKey[]): PublishedKey[] {
    const now = this.now().getTime();
    return keys.filter((k) => k.notAfter === undefined || k.notAfter.getTime() > now);
  }

  /** One fetch at a time: callers that arrive while one runs share its answer. */
  private fetchOnce(bypassCaches: boolean): Promise<PublishedKey[]> {
    this.fetching ??= this.fetchKeys(bypassCaches).finally(() => {
      this.fetching = undefined;
    });
    return this.fetching;
  }

  private async fetchKeys(bypassCaches: boolean): Promise<PublishedKey[]> {
    this.lastAttempt = this.now().getTime();
    let res: Awaited<ReturnType<NonNullable<typeof this.client>["getSigningKeys"]>>;
    try {
      res = await this.client!.getSigningKeys({}, bypassCaches ? { headers: { "cache-control": "no-cache" } } : {});
    } catch (err) {
      this.lastError = new SigningKeysUnavailableError(
        `cannot fetch licensd's signing keys: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
      throw this.lastError;
    }
    const keys: PublishedKey[] = [];
    for (const k of res.keys) {
      // Only what the formats define: Ed25519, 32-byte keys, active or retiring.
      if (k.algorithm !== "Ed25519" || k.publicKey.length !== 32) continue;
      if (k.status !== SigningKeyStatus.ACTIVE && k.status !== SigningKeyStatus.RETIRING) continue;
      keys.push({
        kid: k.kid,
        publicKey: k.publicKey,
        status: k.status === SigningKeyStatus.ACTIVE ? "active" : "retiring",
        notBefore: k.notBefore && timestampDate(k.notBefore),
        notAfter: k.notAfter && timestampDate(k.notAfter),
      });
    }
    this.cache = { keys, at: this.now().getTime() };
    this.lastError = undefined;
    return keys;
  }
}
