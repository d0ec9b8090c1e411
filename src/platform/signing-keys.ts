import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign as signWith,
  verify,
  type KeyObject,
} from "node:crypto";
import sodium from "sodium-native";
import { BatchSigner } from "./batch-signer.js";
import type { Clock } from "./clock.js";
import { type DataKeys, open, seal } from "./crypto.js";
import { sql, type Database, type EntityManager } from "./db.js";
import { newId } from "./ids.js";
import type { Notifications } from "./key-failures.js";
import type { Logger } from "./logger.js";
import { every, type Every } from "./worker.js";

/** See SigningKeyStore.onRotate. */
export type RotationHook = (
  em: EntityManager,
  newKey: { kid: string; sign(message: Uint8Array): Buffer },
) => Promise<void>;

export type SigningKeyStatus = "active" | "retiring";

export interface PublicSigningKey {
  kid: string;
  algorithm: "Ed25519";
  /** Raw 32-byte Ed25519 public key. */
  publicKey: Buffer;
  status: SigningKeyStatus;
  notBefore: Date;
  notAfter: Date | null;
}

interface Row {
  kid: string;
  public_key: Buffer;
  private_key_sealed: Buffer;
  status: SigningKeyStatus;
  not_before_ms: string;
  not_after_ms: string | null;
}

// An Ed25519 SubjectPublicKeyInfo is this 12-byte DER prefix and the 32 raw key bytes.
const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

export const publicKeyFromRaw = (raw: Uint8Array): KeyObject =>
  createPublicKey({ key: Buffer.concat([SPKI_PREFIX, Buffer.from(raw)]), format: "der", type: "spki" });

/** Verifies an Ed25519 signature with a raw public key; a malformed key or signature is simply "no" (never throws). */
export const verifyEd25519 = (publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean =>
  publicKey.length === 32 && signature.length === 64 && verify(null, message, publicKeyFromRaw(publicKey), signature);

/** A rotation NOTIFYs this channel (payload: the new kid) as it commits; every instance reloads its keys on it. */
export const SIGNING_KEYS_CHANNEL = "licensd_signing_keys";

/**
 * The Ed25519 keys that sign checkpoints (and leases and license files). Private keys
 * are stored sealed under the data key; the first start generates one. A rotation
 * reaches every instance through NOTIFY as it commits; each also reloads the set every
 * minute (and when its LISTEN connection comes back), in case a notification was missed.
 */
export class SigningKeyStore {
  private active: { kid: string; secretKey: Buffer } | undefined;
  private keys: PublicSigningKey[] = [];
  private reloads: Every | undefined;
  private readonly batches: BatchSigner;
  private readonly rotationHooks: RotationHook[] = [];
  /** Reloads run one after another, so one that read the rows earlier never ends after one that read them later. */
  private reloading: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly db: Database,
    private readonly dataKey: DataKeys,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly notifications?: Notifications,
  ) {
    this.batches = new BatchSigner((message) => this.sign(message));
  }

  /**
   * Runs `hook` in every rotation's transaction, after the new key is stored, with a signer of the new key: for what
   * must be signed again before an older key retires (the audit log's retention cuts).
   */
  onRotate(hook: RotationHook): void {
    this.rotationHooks.push(hook);
  }

  async start(): Promise<void> {
    await this.ensureActive();
    if (this.notifications) {
      await this.notifications.listen(SIGNING_KEYS_CHANNEL, (kid) => this.reloadNow(`rotated to ${kid}`));
      this.notifications.onReconnect(() => this.reloadNow("notifications reconnected"));
    }
    await this.reload();
    this.reloads = every(60_000, () => this.reload(), { name: "signing key reload", logger: this.logger });
  }

  /** A reload nobody awaits: a failure is logged, and the reload every minute tries again. */
  private reloadNow(why: string) {
    if (this.stopped) return;
    this.reload().then(
      () => this.logger.info({ active: this.active?.kid, why }, "signing keys reloaded"),
      (err: unknown) => this.logger.warn({ err, why }, "could not reload the signing keys; retrying within a minute"),
    );
  }

  /**
   * Stops the reloads (resolves once a running one has ended); signatures still waiting for
   * the end of the turn are made now.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.batches.flush();
    await this.reloads?.stop();
  }

  /** Creates the first key when none is active; concurrent starts create one between them. */
  private async ensureActive() {
    const [row] = await sql<{ n: number }>(
      this.db,
      `select count(*)::int as n from signing_keys where status = 'active'`,
    );
    if (row.n > 0) return;
    const { publicKey, privateKey } = generateKeyPairSync("ed25519");
    const kid = newId("sk");
    const raw = publicKey.export({ format: "der", type: "spki" }).subarray(SPKI_PREFIX.length);
    const sealed = seal(this.dataKey, privateKey.export({ format: "der", type: "pkcs8" }), kid);
    await sql(
      this.db,
      `insert into signing_keys (kid, algorithm, public_key, private_key_sealed, status, not_before, created_at)
       values ($1, 'Ed25519', $2, $3, 'active', $4, $5) on conflict do nothing`,
      [kid, raw, sealed, this.clock.now(), this.clock.now()],
    );
  }

  /** Reads the keys again: the active one signs from now on, the published set is replaced. */
  reload(): Promise<void> {
    const next = this.reloading.then(() => this.load());
    this.reloading = next.catch(() => undefined);
    return next;
  }

  private async load(): Promise<void> {
    const rows = await sql<Row>(
      this.db,
      `select kid, public_key, private_key_sealed, status,
              (extract(epoch from not_before) * 1000)::bigint as not_before_ms,
              (extract(epoch from not_after) * 1000)::bigint as not_after_ms from signing_keys
        where status in ('active', 'retiring') order by (status = 'active') desc, not_before desc`,
    );
    this.keys = rows.map((r) => ({
      kid: r.kid,
      algorithm: "Ed25519",
      publicKey: r.public_key,
      status: r.status,
      notBefore: new Date(Number(r.not_before_ms)),
      notAfter: r.not_after_ms === null ? null : new Date(Number(r.not_after_ms)),
    }));
    const active = rows.find((r) => r.status === "active");
    if (active && active.kid !== this.active?.kid) {
      let der: Buffer;
      try {
        der = open(this.dataKey, active.private_key_sealed, active.kid);
      } catch {
        throw new Error(
          `cannot unseal signing key ${active.kid}: ` +
            "neither LICENSD_DATA_KEY nor any LICENSD_DATA_KEY_PREVIOUS key sealed it (during a data-key rotation, " +
            "give the old key in LICENSD_DATA_KEY_PREVIOUS: docs/operations.md)",
        );
      }
      this.setActive(active.kid, createPrivateKey({ key: der, format: "der", type: "pkcs8" }));
      der.fill(0);
    }
  }

  /**
   * The active key, as libsodium's 64-byte secret key (seed and public key) in guarded
   * memory; the one it replaces is wiped and freed.
   */
  private setActive(kid: string, key: KeyObject) {
    const seed = Buffer.from(key.export({ format: "jwk" }).d as string, "base64url");
    const secretKey = sodium.sodium_malloc(sodium.crypto_sign_SECRETKEYBYTES);
    sodium.crypto_sign_seed_keypair(Buffer.alloc(sodium.crypto_sign_PUBLICKEYBYTES), secretKey, seed);
    seed.fill(0);
    const previous = this.active;
    this.active = { kid, secretKey };
    if (previous) sodium.sodium_free(previous.secretKey);
  }

  /**
   * Signs with the active key. libsodium, called in line: about 18 µs of CPU per signature
   * on the benchmark machine, where node:crypto took 27 µs in line and 40–70 µs through the
   * thread pool (OpenSSL 3's per-call set-up, and the pool's hand-offs; measured side by
   * side, 20,000 signatures each).
   */
  sign(message: Uint8Array): { kid: string; signature: Buffer } {
    const { kid, secretKey } = this.activeKey();
    const signature = Buffer.allocUnsafe(sodium.crypto_sign_BYTES);
    sodium.crypto_sign_detached(signature, message, secretKey);
    return { kid, signature };
  }

  /**
   * Signs the UTF-8 bytes of `message` with the active key at the end of this turn of the
   * event loop, together with whatever else the turn asks (see BatchSigner): for hot paths
   * whose answer can wait for its signature, such as ValidateLicense.
   */
  signLater(message: string): Promise<{ kid: string; signature: Buffer }> {
    this.activeKey();
    return this.batches.later(message);
  }

  private activeKey(): { kid: string; secretKey: Buffer } {
    if (!this.active) throw new Error("no active signing key (SigningKeyStore.start not called)");
    return this.active;
  }

  activeKid(): string {
    if (!this.active) throw new Error("no active signing key (SigningKeyStore.start not called)");
    return this.active.kid;
  }

  /** Active and retiring keys; a retiring key drops out once its not_after has passed. */
  publicKeys(): PublicSigningKey[] {
    const now = this.clock.now().getTime();
    return this.keys.filter((k) => k.notAfter === null || k.notAfter.getTime() > now);
  }

  /**
   * Starts a new active key inside the caller's transaction `em`. The old one turns
   * retiring: it signs nothing more, and what it signed keeps verifying for
   * `retireAfterSeconds` (at least the longest lease or file lifetime in use), after which
   * it is retired and no longer published. `retireAfterSeconds` 0 is for a key that leaked:
   * the active key and every retiring one are retired at once. The other instances hear of
   * it by NOTIFY when the transaction commits; call `reload` then for this one.
   */
  async rotate(
    em: EntityManager,
    retireAfterSeconds: number,
  ): Promise<{ key: PublicSigningKey; retiring: string[]; retired: string[] }> {
    const now = this.clock.now();
    const { publicKey, privateKey } = generateKeyPairSync("ed25519");
    const kid = newId("sk");
    const raw = publicKey.export({ format: "der", type: "spki" }).subarray(SPKI_PREFIX.length);
    const sealed = seal(this.dataKey, privateKey.export({ format: "der", type: "pkcs8" }), kid);
    await sql(em, `update signing_keys set status = 'retired' where status = 'retiring' and not_after <= $1`, [now]);
    let retiring: string[] = [];
    let retired: string[] = [];
    if (retireAfterSeconds === 0) {
      const old = await sql<{ kid: string }>(
        em,
        `update signing_keys set status = 'retired', not_after = $1
          where status in ('active', 'retiring') returning kid`,
        [now],
      );
      retired = old.map((r) => r.kid);
    } else {
      const old = await sql<{ kid: string }>(
        em,
        `update signing_keys set status = 'retiring', not_after = $1 where status = 'active' returning kid`,
        [new Date(now.getTime() + retireAfterSeconds * 1000)],
      );
      retiring = old.map((r) => r.kid);
    }
    await sql(
      em,
      `insert into signing_keys (kid, algorithm, public_key, private_key_sealed, status, not_before, created_at)
       values ($1, 'Ed25519', $2, $3, 'active', $4, $5)`,
      [kid, raw, sealed, now, now],
    );
    const signer = { kid, sign: (message: Uint8Array) => signWith(null, message, privateKey) };
    for (const hook of this.rotationHooks) await hook(em, signer);
    // Delivered when (and only if) the transaction commits.
    await sql(em, "select pg_notify($1, $2)", [SIGNING_KEYS_CHANNEL, kid]);
    this.logger.info({ kid, retiring, retired, retireAfterSeconds }, "signing key rotated");
    return {
      key: { kid, algorithm: "Ed25519", publicKey: Buffer.from(raw), status: "active", notBefore: now, notAfter: null },
      retiring,
      retired,
    };
  }
}
