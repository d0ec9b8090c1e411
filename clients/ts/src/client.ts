/*
 * createLicensdClient: typed clients for licensd's six services over one transport, with
 * the API key, a deadline per call and retries of the calls that are safe to repeat.
 *
 * Connect and gRPC-Web go through fetch (@connectrpc/connect-web), so this runs in browsers,
 * Deno, Bun, edge runtimes and Node. fetch cannot stream a request body: client and
 * bidirectional streams (ConnectLease, IngestUsage, StreamUsage, ImportLicenses) need
 * HTTP/2 gRPC, which `createLicensdClient` from "@licensd/client/node" adds.
 */
import type { DescMessage, DescMethodStreaming, DescMethodUnary, MessageInitShape } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client, type ContextValues, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { ActivationService } from "../gen/licensd/activation/v1/activation_service_pb.js";
import { AuditService } from "../gen/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../gen/licensd/licensing/v1/licensing_service_pb.js";
import { TenantService } from "../gen/licensd/tenant/v1/tenant_service_pb.js";
import { UsageService } from "../gen/licensd/usage/v1/usage_service_pb.js";
import { WebhookService } from "../gen/licensd/webhook/v1/webhook_service_pb.js";
import { backoff, sleep } from "./backoff.js";
import { describeError } from "./errors.js";

export type Protocol = "connect" | "grpc-web";

export interface RetryOptions {
  /** Attempts in all, the first included (default 3); 1 turns retries off. */
  maxAttempts?: number;
  /** The first delay's ceiling (default 100 ms); each retry doubles it, jittered over its upper half. */
  initialMs?: number;
  /**
   * The longest delay (default 5 s). A server that asks for a longer wait (RATE_LIMITED's retry delay) gets the error
   * back at once, with `retryDelayMs` in `describeError`: the caller decides whether to wait that long.
   */
  maxMs?: number;
}

export interface RetryEvent {
  /** The attempt that failed (1 for the first). */
  attempt: number;
  /** How long the client waits before the next one. */
  delayMs: number;
  error: ConnectError;
  /** "licensd.licensing.v1.LicensingService/GetLicense" */
  procedure: string;
}

export interface LicensdClientOptions {
  /** licensd's base URL, e.g. `https://licensd.example.com`. */
  baseUrl: string;
  /**
   * An API key (`lsk_…`) or the super-admin key, sent as `Authorization: Bearer <key>`. Calls whose credential is a
   * license key (ValidateLicense, Activate, RecordUsage by key, …) need none.
   */
  apiKey?: string;
  /** "connect" (default; Connect's binary format) or "grpc-web". */
  protocol?: Protocol;
  /**
   * The deadline of a unary call, its retries and their waits included (default 30 s; 0: none). A call's own
   * `timeoutMs` option overrides it. Streams have no deadline unless the call gives one.
   */
  timeoutMs?: number;
  /** Retries of idempotent unary calls (see `isIdempotentCall`); `false` turns them off. */
  retry?: RetryOptions | false;
  /** Told about every retry before its wait, e.g. to log it. Errors it throws are ignored. */
  onRetry?: (event: RetryEvent) => void;
  /** Your own transport instead of one built from baseUrl and protocol; API key, deadline and retries still apply. */
  transport?: Transport;
  /** The fetch the Connect and gRPC-Web transports use (default globalThis.fetch). */
  fetch?: typeof globalThis.fetch;
}

export interface LicensdClient {
  tenant: Client<typeof TenantService>;
  licensing: Client<typeof LicensingService>;
  activation: Client<typeof ActivationService>;
  usage: Client<typeof UsageService>;
  audit: Client<typeof AuditService>;
  webhook: Client<typeof WebhookService>;
  /** The transport every client above uses (API key, deadline and retries included), for other generated services. */
  transport: Transport;
  /** Closes the connections the client opened itself (HTTP/2 sessions of the node gRPC client); a no-op over fetch. */
  close(): void;
}

/** What a transport takes as request headers (HeadersInit, which Node's types do not name). */
type Header = Parameters<Transport["unary"]>[3];

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_RETRY: Required<RetryOptions> = { maxAttempts: 3, initialMs: 100, maxMs: 5_000 };

export function createLicensdClient(options: LicensdClientOptions): LicensdClient {
  const inner = options.transport ?? fetchTransport(options);
  const transport = licensdTransport(inner, options);
  return {
    tenant: createClient(TenantService, transport),
    licensing: createClient(LicensingService, transport),
    activation: createClient(ActivationService, transport),
    usage: createClient(UsageService, transport),
    audit: createClient(AuditService, transport),
    webhook: createClient(WebhookService, transport),
    transport,
    close() {},
  };
}

function fetchTransport(options: LicensdClientOptions): Transport {
  const protocol = options.protocol ?? "connect";
  const common = { baseUrl: options.baseUrl, fetch: options.fetch };
  switch (protocol) {
    case "connect":
      return createConnectTransport({ ...common, useBinaryFormat: true });
    case "grpc-web":
      return createGrpcWebTransport({ ...common, useBinaryFormat: true });
    default:
      throw new Error(
        `protocol: ${JSON.stringify(protocol)} is not one of "connect", "grpc-web"` +
          (protocol === "grpc" ? ' (gRPC over HTTP/2 needs createLicensdClient from "@licensd/client/node")' : ""),
      );
  }
}

/**
 * Whether a call may be sent again without changing anything twice: a unary read
 * (`idempotency_level` NO_SIDE_EFFECTS or IDEMPOTENT in the proto), or a unary write whose
 * request carries an `idempotency_key` (docs/api.md: a retry with the same key returns the
 * first answer) — at the top level, or in a message field such as RecordUsage's `event`.
 * Streams never are: what the server consumed of one cannot be replayed from here.
 */
export function isIdempotentCall<I extends DescMessage>(
  method: DescMethodUnary<I, DescMessage> | DescMethodStreaming<I, DescMessage>,
  input: MessageInitShape<I>,
): boolean {
  if (method.methodKind !== "unary") return false;
  if (
    method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS ||
    method.idempotency === MethodOptions_IdempotencyLevel.IDEMPOTENT
  )
    return true;
  return carriesIdempotencyKey(method.input, input as Record<string, unknown>, 1);
}

function carriesIdempotencyKey(desc: DescMessage, message: Record<string, unknown> | undefined, depth: number) {
  if (!message) return false;
  for (const field of desc.fields) {
    if (field.name === "idempotency_key" && field.fieldKind === "scalar") {
      const key = message[field.localName];
      if (typeof key === "string" && key !== "") return true;
    } else if (depth > 0 && field.fieldKind === "message") {
      if (carriesIdempotencyKey(field.message, message[field.localName] as Record<string, unknown>, depth - 1))
        return true;
    }
  }
  return false;
}

/**
 * Errors worth another attempt of an idempotent call: UNAVAILABLE (the server shutting
 * down, its database unreachable, the connection lost) and RESOURCE_EXHAUSTED with reason
 * RATE_LIMITED (a token bucket that refills); never a quota (LIMIT_EXCEEDED) or a size.
 */
export function isRetryableError(err: ConnectError): boolean {
  if (err.code === Code.Unavailable) return true;
  return err.code === Code.ResourceExhausted && describeError(err).reason === "RATE_LIMITED";
}

/**
 * A lost connection, as each transport reports it, is UNAVAILABLE: fetch rejects with a
 * TypeError exactly when the network failed (refused, reset, DNS), which connect-web reports
 * as UNKNOWN; an HTTP/2 stream on a connection that died closes with CANCEL, which
 * connect-node reports as CANCELED although the caller cancelled nothing.
 */
function normalize(raw: unknown, signal: AbortSignal | undefined): ConnectError {
  const err = ConnectError.from(raw);
  if (err.details.length > 0) return err;
  const lost =
    (err.code === Code.Unknown && err.cause instanceof TypeError) || (err.code === Code.Canceled && !signal?.aborted);
  return lost ? new ConnectError(err.rawMessage, Code.Unavailable, err.metadata, undefined, err.cause ?? err) : err;
}

/** Wraps a transport with the API key header, the unary deadline and retries. */
function licensdTransport(inner: Transport, options: LicensdClientOptions): Transport {
  const retry = options.retry === false ? { ...DEFAULT_RETRY, maxAttempts: 1 } : { ...DEFAULT_RETRY, ...options.retry };
  const defaultTimeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const withKey = (header: Header) => {
    const h = new Headers(header);
    if (options.apiKey !== undefined && !h.has("authorization")) h.set("authorization", `Bearer ${options.apiKey}`);
    return h;
  };
  return {
    async unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: Header,
      input: MessageInitShape<I>,
      contextValues?: ContextValues,
    ) {
      const headers = withKey(header);
      const budget = timeoutMs ?? defaultTimeoutMs;
      const deadline = budget > 0 ? Date.now() + budget : undefined;
      const attempts = isIdempotentCall(method, input) ? Math.max(1, retry.maxAttempts) : 1;
      const delays = backoff(retry.initialMs, retry.maxMs);
      for (let attempt = 1; ; attempt++) {
        // Each attempt gets what is left of the call's deadline (0 tells the transport: none).
        const remaining = deadline === undefined ? 0 : deadline - Date.now();
        if (deadline !== undefined && remaining <= 0)
          throw new ConnectError("the operation timed out", Code.DeadlineExceeded);
        try {
          return await inner.unary(method, signal, remaining, headers, input, contextValues);
        } catch (raw) {
          const error = normalize(raw, signal);
          if (attempt >= attempts || signal?.aborted || !isRetryableError(error)) throw error;
          const asked = describeError(error).retryDelayMs;
          if (asked !== undefined && asked > retry.maxMs) throw error;
          const delayMs = Math.max(asked ?? 0, delays.next());
          if (deadline !== undefined && Date.now() + delayMs >= deadline) throw error;
          try {
            options.onRetry?.({ attempt, delayMs, error, procedure: `${method.parent.typeName}/${method.name}` });
          } catch {
            // A failing observer must not change what the call does.
          }
          await sleep(delayMs, signal);
          if (signal?.aborted) throw ConnectError.from(signal.reason, Code.Canceled);
        }
      }
    },
    stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: Header,
      input: AsyncIterable<MessageInitShape<I>>,
      contextValues?: ContextValues,
    ) {
      return inner.stream(method, signal, timeoutMs ?? 0, withKey(header), input, contextValues).catch((raw) => {
        throw normalize(raw, signal);
      });
    },
  };
}
