/*
 * LicenseGuard: keeps this machine's lease fresh over ConnectLease and answers feature
 * checks from it, online or offline (the Keygen and Cryptlex client model, with
 * PocketPaw's "never throws" LicenseInfo). It is a LicenseSource: the gates take it.
 *
 * The last lease and the signing keys live in a cache file, so `hasFeature()` answers
 * right after `start()`, before or without any network. In the background the guard
 * fetches the keys, activates, opens ConnectLease and heartbeats; a lease replaces the
 * cached one only once it verifies. Validity is recomputed at every call against the
 * clock, so an expired lease stops granting features even offline.
 *
 * The cache file holds the keys along with the lease: it catches corruption and an
 * edited lease, not someone who rewrites both (pin the keys in the app for that).
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import {
  ActivationService,
  type ConnectLeaseRequestSchema,
} from "../../gen/licensd/activation/v1/activation_service_pb.js";
import { type Backoff, backoff, sleep } from "../backoff.js";
import { invalidLicense, type LicenseInfo, type LicenseSource } from "../gates/license-info.js";
import { type LeaseCheck, type LeasePayload, verifyLease } from "../verify/lease.js";

export interface LicenseGuardOptions {
  /** licensd's base URL, e.g. `https://licensd.example.com`. */
  baseUrl: string;
  /** The license key. */
  key: string;
  /** This machine's fingerprint (the lease is bound to it). */
  fingerprint: string;
  /** Where the last lease and the signing keys are kept (written atomically, mode 0600). */
  cacheFile: string;
  /** Sent on activation; defaults to os.hostname(). */
  hostname?: string;
  /** Sent on activation; defaults to `<platform>-<arch>`, e.g. "linux-x64". */
  platform?: string;
  /**
   * This machine's hardware components (e.g. `{ name: "disk", fingerprint: "…" }`, at most 32, names unique),
   * registered when this activation creates the machine; a policy's component matching strategy then checks them on
   * validation.
   */
  components?: { name: string; fingerprint: string }[];
  /** Between heartbeats on the stream; default 5 minutes. Keep it well below the policy's heartbeat duration. */
  heartbeatIntervalMs?: number;
  /** Reconnect delays: doubling from `initialMs`, capped at `maxMs` (defaults 1 s and 60 s). */
  backoff?: { initialMs: number; maxMs: number };
  /**
   * Defaults to a gRPC (HTTP/2) transport to `baseUrl`, which `stop()` closes. A given transport is the caller's to
   * close.
   */
  transport?: Transport;
  now?: () => Date;
  /**
   * Called after every change: a lease stored, a revocation, the stream opening or closing. Errors it throws are
   * ignored.
   */
  onChange?: (info: LicenseInfo) => void;
}

interface SigningKey {
  kid: string;
  publicKey: Uint8Array;
}

interface CacheFile {
  v: 1;
  lease: string | null;
  /** Public keys, base64. */
  keys: { kid: string; publicKey: string }[];
}

/**
 * Revocations after which the guard stops reconnecting: someone ended this license or
 * took this machine's seat on purpose, and reconnecting would take the seat back (or
 * fail forever). The app's next `start()` activates anew and hears the verdict then.
 * HEARTBEAT_DEAD means we missed heartbeats (a sleeping laptop): activate again at once,
 * which revives the machine. Anything else — LICENSE_SUSPENDED, LICENSE_EXPIRED, reasons
 * newer than this SDK — can be undone (reinstatement, renewal): retry at the slowest
 * pace; each attempt is refused with the same revocation until then.
 */
const FINAL = new Set([
  "LICENSE_REVOKED",
  "LICENSE_DELETED",
  "MACHINE_DELETED",
  "MACHINE_DEACTIVATED",
  "INVALID_LICENSE_KEY",
]);

/** Errors from Activate that the server also pushes as revocations. */
const REVOKING_ERRORS = new Set(["LICENSE_SUSPENDED", "LICENSE_REVOKED", "LICENSE_EXPIRED", "HEARTBEAT_DEAD"]);

type Next = "retry" | "slow" | "stop";

/** Writes a file whole or not at all: a reader (another guard, a crash) never sees half of it. */
async function writeAtomic(file: string, data: string) {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    await writeFile(tmp, data, { mode: 0o600 });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export class LicenseGuard implements LicenseSource {
  private readonly client: Client<typeof ActivationService>;
  /** Our own HTTP/2 connection, when no transport was given: stop() closes it. */
  private readonly sessions?: Http2SessionManager;
  private readonly now: () => Date;
  private readonly heartbeatIntervalMs: number;
  private readonly backoff: { initialMs: number; maxMs: number };
  private readonly halt = new AbortController();

  private keys: SigningKey[] = [];
  /**
   * The lease held, with the check of its signature and binding against the keys held (expiry is checked at every
   * info(), against the clock). Both change together, so info() never sees a lease without its check.
   */
  private current: { token: string; check: LeaseCheck } | null = null;
  private revocation: string | null = null;
  private error: string | null = null;
  private online = false;
  private needsActivation = true;
  private readonly retry: Backoff;
  private starting?: Promise<void>;
  private loop?: Promise<void>;
  /** The loop ended on a final revocation (or a wrong key): it will not reconnect. */
  private finished = false;
  private writes: Promise<void> = Promise.resolve();

  constructor(private readonly opts: LicenseGuardOptions) {
    this.now = opts.now ?? (() => new Date());
    this.heartbeatIntervalMs = opts.heartbeatIntervalMs ?? 5 * 60_000;
    this.backoff = opts.backoff ?? { initialMs: 1_000, maxMs: 60_000 };
    this.retry = backoff(this.backoff.initialMs, this.backoff.maxMs);
    let transport = opts.transport;
    if (!transport) {
      // Pings notice a connection that died silently, which a quiet stream would not.
      this.sessions = new Http2SessionManager(opts.baseUrl, { pingIntervalMs: 30_000, pingTimeoutMs: 10_000 });
      transport = createGrpcTransport({ baseUrl: opts.baseUrl, sessionManager: this.sessions });
    }
    this.client = createClient(ActivationService, transport);
  }

  /** Loads the cached lease (so checks answer at once), then keeps the lease fresh in the background. Never throws. */
  start(): Promise<void> {
    this.starting ??= this.load().then(() => {
      if (!this.halt.signal.aborted) this.loop = this.run();
    });
    return this.starting;
  }

  /** Ends the stream, the timers and the connection; resolves once all are closed and the cache is written. */
  async stop(): Promise<void> {
    this.halt.abort();
    await this.starting;
    await this.loop;
    await this.writes;
    this.sessions?.abort();
  }

  /** A snapshot of the license as of now. Never throws. */
  info(): LicenseInfo {
    const base = { online: this.online, error: this.error };
    if (this.revocation) return invalidLicense(this.revocation, base);
    if (!this.current) return invalidLicense("NO_LEASE", base);
    const lease: LeasePayload | undefined = this.current.check.lease;
    if (!lease) return invalidLicense(this.current.check.code, base);
    const expiry = typeof lease.expires_at === "string" ? new Date(lease.expires_at) : null;
    const claims = {
      ...base,
      status: lease.status,
      tier: lease.plan,
      expiry,
      licenseId: lease.license_id,
      machineId: lease.machine_id,
    };
    let now = Number.NaN;
    try {
      now = this.now().getTime();
    } catch {
      // Fail safe: an unreadable clock counts as past every expiry.
    }
    if (expiry !== null && !(expiry.getTime() > now)) return invalidLicense("EXPIRED", claims);
    return {
      ...claims,
      valid: true,
      code: "VALID",
      // A lease signed for a license past its expiry is access the policy grants on grace.
      grace: lease.status === "expired",
      features: [...lease.features],
      entitlements: { ...lease.entitlements },
    };
  }

  /**
   * The lease held while it is valid (a signed `licensd1.…` token bound to this machine), e.g. as UsageUploader's
   * `lease` credential; null otherwise.
   */
  get lease(): string | null {
    return this.info().valid ? (this.current?.token ?? null) : null;
  }

  /** Started, not stopped, and not ended by a final revocation: the guard still keeps the lease fresh. */
  get running(): boolean {
    return this.loop !== undefined && !this.finished && !this.halt.signal.aborted;
  }

  hasFeature(name: string): boolean {
    const info = this.info();
    return info.valid && info.features.includes(name);
  }

  /** The entitlement's value while the lease is valid; undefined otherwise. */
  entitlement(name: string): boolean | number | string | undefined {
    const info = this.info();
    return info.valid && Object.hasOwn(info.entitlements, name) ? info.entitlements[name] : undefined;
  }

  /** The lease's signature and binding against the keys held; an epoch clock leaves expiry to info(). */
  private async verify(token: string, now = new Date(0)): Promise<LeaseCheck> {
    try {
      return await verifyLease(token, this.keys, { fingerprint: this.opts.fingerprint, now });
    } catch {
      return { valid: false, code: "MALFORMED", hasFeature: () => false };
    }
  }

  private async load() {
    let text: string;
    try {
      text = await readFile(this.opts.cacheFile, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT")
        this.error = `cannot read the cache file: ${(err as Error).message}`;
      return;
    }
    try {
      const cache = JSON.parse(text) as Partial<CacheFile>;
      this.keys = (Array.isArray(cache.keys) ? cache.keys : []).map((k) => ({
        kid: String(k.kid),
        publicKey: Buffer.from(String(k.publicKey), "base64"),
      }));
      if (typeof cache.lease === "string") this.current = { token: cache.lease, check: await this.verify(cache.lease) };
    } catch {
      this.error = "the cache file is not valid JSON or not a lease cache; ignored";
    }
  }

  /** Connects, and reconnects after every failure or dropped stream, until stopped or finally revoked. */
  private async run() {
    const halt = this.halt.signal;
    while (!halt.aborted) {
      let next: Next;
      try {
        next = await this.connect();
      } catch (err) {
        if (halt.aborted) break;
        next = this.failed(ConnectError.from(err));
      }
      if (next === "stop") this.finished = true;
      if (next === "stop" || halt.aborted) break;
      // Capped, jittered backoff, so a fleet cut off together does not return in step.
      await sleep(next === "slow" ? this.retry.slowest() : this.retry.next(), halt);
    }
  }

  /** One session: keys, activation if needed, then the stream until it ends. */
  private async connect(): Promise<Next> {
    const session = new AbortController();
    const signal = AbortSignal.any([this.halt.signal, session.signal]);
    try {
      await this.fetchKeys(signal);
      if (this.needsActivation) {
        const { lease } = await this.client.activate(
          {
            key: this.opts.key,
            fingerprint: this.opts.fingerprint,
            hostname: this.opts.hostname ?? os.hostname(),
            platform: this.opts.platform ?? `${process.platform}-${process.arch}`,
            cores: os.availableParallelism(),
            components: this.opts.components ?? [],
          },
          { signal },
        );
        this.needsActivation = false;
        if (lease) await this.accept(lease.token, signal);
      }
      for await (const res of this.client.connectLease(this.heartbeats(signal), { signal })) {
        if (res.event.case === "lease") {
          this.retry.reset();
          this.online = true;
          await this.accept(res.event.value.token, signal);
        } else if (res.event.case === "revocation") {
          return this.revoke(res.event.value.reason);
        }
      }
      return "retry"; // the server ended the stream without a verdict (it is shutting down)
    } finally {
      session.abort(); // ends the heartbeat generator
      if (this.online) {
        this.online = false;
        this.changed();
      }
    }
  }

  /** The first message names the license and machine; then an empty heartbeat every interval. */
  private async *heartbeats(signal: AbortSignal): AsyncGenerator<MessageInitShape<typeof ConnectLeaseRequestSchema>> {
    yield { key: this.opts.key, fingerprint: this.opts.fingerprint };
    for (;;) {
      await sleep(this.heartbeatIntervalMs, signal);
      if (signal.aborted) return;
      yield {};
    }
  }

  private async fetchKeys(signal: AbortSignal) {
    const { keys } = await this.client.getSigningKeys({}, { signal });
    this.keys = keys.map((k) => ({ kid: k.kid, publicKey: k.publicKey }));
    // The lease held is judged by the keys held: a key withdrawn since it was signed no longer vouches for it.
    const held = this.current;
    if (held) {
      const check = await this.verify(held.token);
      if (this.current === held) this.current = { token: held.token, check };
    }
  }

  /** Stores a lease from the server once it verifies (a key rotated since we fetched the keys is fetched). */
  private async accept(token: string, signal: AbortSignal) {
    let check = await this.verify(token, this.now());
    if (check.code === "UNKNOWN_KEY") {
      await this.fetchKeys(signal);
      check = await this.verify(token, this.now());
    }
    // Once stop() is called the state stays as it was: nothing changes, nothing is reported after it.
    if (this.halt.signal.aborted) return;
    if (!check.valid) {
      this.error = `licensd sent a lease that does not verify (${check.code}); keeping the previous one`;
      return;
    }
    this.current = { token, check };
    this.revocation = null;
    this.error = null;
    this.persist();
    this.changed();
  }

  /** Drops the lease (here and in the cache) and says whether to reconnect. */
  private revoke(reason: string): Next {
    this.revocation = reason;
    this.current = null;
    this.persist();
    this.changed();
    if (FINAL.has(reason)) return "stop";
    if (reason === "HEARTBEAT_DEAD") {
      this.needsActivation = true;
      this.retry.reset();
      return "retry";
    }
    return "slow";
  }

  /** A failed attempt: the server's verdicts on the license act like revocations; anything else is retried. */
  private failed(err: ConnectError): Next {
    const reason = err.findDetails(ErrorInfoSchema)[0]?.reason ?? "";
    if (err.code === Code.Unauthenticated) return this.revoke("INVALID_LICENSE_KEY");
    if (REVOKING_ERRORS.has(reason)) return this.revoke(reason);
    // The machine is gone while we were away (culled, or deactivated): activate again.
    if (err.code === Code.NotFound) this.needsActivation = true;
    this.error = `${Code[err.code]}: ${err.rawMessage}`;
    this.changed();
    return "retry";
  }

  /** Queues a write of the current state; writes stay in order. A failed write is reported, never thrown. */
  private persist() {
    const cache: CacheFile = {
      v: 1,
      lease: this.current?.token ?? null,
      keys: this.keys.map((k) => ({ kid: k.kid, publicKey: Buffer.from(k.publicKey).toString("base64") })),
    };
    this.writes = this.writes
      .then(() => writeAtomic(this.opts.cacheFile, `${JSON.stringify(cache)}\n`))
      .catch((err: Error) => {
        this.error = `cannot write the cache file: ${err.message}`;
      });
  }

  private changed() {
    try {
      this.opts.onChange?.(this.info());
    } catch {
      // The app's callback failing must not stop the guard.
    }
  }
}
