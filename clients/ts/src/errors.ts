/*
 * What a failed licensd call says, as plain data: the Connect code, the ErrorInfo reason
 * (stable, UPPER_SNAKE_CASE: branch on it, not on the message), its metadata, every field
 * violation of a BadRequest, the delay the server asks for before a retry, and a hint for
 * the reasons a person can act on.
 */
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { type Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";

export interface FieldViolation {
  /** The field as protovalidate names it: `event.metric`, `events[2].quantity`, `metadata["k"]`. */
  field: string;
  description: string;
}

export interface LicensdErrorDescription {
  code: Code;
  /** The code as Connect spells it on the wire: `invalid_argument`, `unauthenticated`, … */
  codeName: string;
  /** The server's message, without the `[code]` prefix ConnectError adds. */
  message: string;
  /** ErrorInfo reason (`INVALID_ARGUMENT`, `RATE_LIMITED`, …); the code in UPPER_SNAKE_CASE when none was sent. */
  reason: string;
  /** ErrorInfo domain: "licensd.dev" for licensd's own errors; empty when none was sent. */
  domain: string;
  metadata: Record<string, string>;
  /** Every BadRequest violation; else the one field ErrorInfo names (`metadata.field`); else empty. */
  fieldViolations: FieldViolation[];
  /** How long the server asks the client to wait (RetryInfo, or ErrorInfo's `retry_delay_ms`). */
  retryDelayMs?: number;
  /** What to do about it, where the reason says. */
  hint?: string;
}

/** Connect's wire spelling of a code: Code.InvalidArgument → "invalid_argument". */
export const codeName = (code: Code): string => codeToString(code);

const HINTS: Record<string, string> = {
  MISSING_API_KEY: "pass an API key (apiKey option; sent as `Authorization: Bearer <key>`)",
  MALFORMED_AUTHORIZATION: "the Authorization header must be `Bearer <key>`",
  INVALID_API_KEY: "the API key is unknown, revoked or expired: create a new one with TenantService.CreateApiKey",
  SCOPE_REQUIRED: "use an API key that has the scope named in metadata.scope",
  SUPER_ADMIN_REQUIRED: "this call needs the super-admin key (LICENSD_SUPER_ADMIN_KEY)",
  INVALID_LICENSE_KEY: "check the license key: no license has it",
  RATE_LIMITED: "too many requests or failed keys from this address: wait retryDelayMs and try again",
  IDEMPOTENCY_KEY_REUSED: "this idempotency key was used with a different request: send a new key",
  IDEMPOTENCY_RESPONSE_DISCARDED:
    "the first answer to this idempotency key is gone: look the result up, or send a new key",
  INVALID_PAGE_TOKEN: "send back a next_page_token unchanged, with the same filters as the request that returned it",
  DATABASE_UNAVAILABLE: "licensd cannot reach its database: retry later",
  TENANT_NOT_FOUND: "the tenant does not exist or was deleted",
  LIMIT_EXCEEDED: "the license's usage limit for this metric is reached for the period",
  TOO_MANY_MACHINES: "every seat of this license is taken: deactivate a machine first",
  MACHINE_FINGERPRINT_TAKEN:
    "another license holds this machine (metadata.fingerprint) in its policy's uniqueness scope: deactivate it there",
  CORE_LIMIT_REACHED:
    "the license's machines have every core it allows (metadata.max_cores): deactivate a machine first",
  CORES_REQUIRED: "the license's policy limits CPU cores: send the machine's cores (1 or more)",
  LICENSE_SUSPENDED: "the license is suspended: the vendor can reinstate it",
  LICENSE_EXPIRED: "the license has expired: renew it",
  LICENSE_REVOKED: "the license was revoked",
  HEARTBEAT_DEAD: "the machine missed its heartbeats: activate it again",
  PROCESS_LIMIT_REACHED:
    "the policy's max_processes are running (metadata.process_leasing_strategy says where): kill one first",
  PROCESS_DEAD: "the process missed its pings: spawn it again",
  INVALID_COMPONENTS:
    "components: at most 32, names unique, and a fingerprint with them when validating (see field in metadata)",
  MESSAGE_TOO_LARGE: "the request is larger than the server accepts: send it in smaller pieces",
  EXPIRY_OUT_OF_RANGE: "the new expiry would be after 9000-01-01",
  LICENSE_REQUIRED: "this service runs only with a valid license (metadata.license_code says why there is none)",
  FEATURE_NOT_LICENSED: "the license does not include the feature in metadata.feature: upgrade the plan",
};

/**
 * Describes any error a licensd call throws (anything else is described as ConnectError.from
 * sees it: code unknown, reason UNKNOWN). Never throws.
 */
export function describeError(err: unknown): LicensdErrorDescription {
  const e = ConnectError.from(err);
  const info = safeDetails(e, ErrorInfoSchema)[0];
  const badRequest = safeDetails(e, BadRequestSchema)[0];
  const retryInfo = safeDetails(e, RetryInfoSchema)[0];
  const metadata = { ...(info?.metadata ?? {}) };
  const reason = info?.reason || codeName(e.code).toUpperCase();

  let fieldViolations: FieldViolation[] = (badRequest?.fieldViolations ?? []).map((v) => ({
    field: v.field,
    description: v.description,
  }));
  if (fieldViolations.length === 0 && metadata.field) {
    // licensd's own checks name one field in ErrorInfo and write "<field>: <what is wrong>" as the message.
    const prefix = `${metadata.field}: `;
    const description = e.rawMessage.startsWith(prefix) ? e.rawMessage.slice(prefix.length) : e.rawMessage;
    fieldViolations = [{ field: metadata.field, description }];
  }

  let retryDelayMs: number | undefined;
  if (retryInfo?.retryDelay) {
    retryDelayMs = Math.max(0, Number(retryInfo.retryDelay.seconds) * 1000 + retryInfo.retryDelay.nanos / 1e6);
  } else if (metadata.retry_delay_ms !== undefined && /^\d+$/.test(metadata.retry_delay_ms)) {
    retryDelayMs = Number(metadata.retry_delay_ms);
  }

  return {
    code: e.code,
    codeName: codeName(e.code),
    message: e.rawMessage,
    reason,
    domain: info?.domain ?? "",
    metadata,
    fieldViolations,
    ...(retryDelayMs !== undefined ? { retryDelayMs } : {}),
    ...(HINTS[reason] ? { hint: HINTS[reason] } : {}),
  };
}

/** A detail the server sent that does not decode is left out rather than thrown. */
function safeDetails<Desc extends DescMessage>(e: ConnectError, schema: Desc): MessageShape<Desc>[] {
  try {
    return e.findDetails(schema);
  } catch {
    return [];
  }
}
