import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { ErrorInfoSchema } from "../../gen/ts/google/rpc/error_details_pb.js";

export const ERROR_DOMAIN = "licensd.dev";

/**
 * A failure the client caused or must handle. Services throw these; the one mapper
 * below turns them into a ConnectError with a google.rpc.ErrorInfo detail.
 */
export class DomainError extends Error {
  constructor(
    readonly code: Code,
    /** UPPER_SNAKE_CASE, stable: clients branch on it. */
    readonly reason: string,
    message: string,
    readonly metadata: Record<string, string> = {},
  ) {
    super(message);
    this.name = "DomainError";
  }
}

export const invalidArgument = (field: string, message: string, reason = "INVALID_ARGUMENT") =>
  new DomainError(Code.InvalidArgument, reason, `${field}: ${message}`, { field });

export const notFound = (resource: string, id: string) =>
  new DomainError(
    Code.NotFound,
    `${resource.toUpperCase().replaceAll(" ", "_")}_NOT_FOUND`,
    `${resource} ${JSON.stringify(id)} not found`,
    {
      resource,
      id,
    },
  );

export const alreadyExists = (reason: string, message: string, metadata: Record<string, string> = {}) =>
  new DomainError(Code.AlreadyExists, reason, message, metadata);

export const failedPrecondition = (reason: string, message: string, metadata: Record<string, string> = {}) =>
  new DomainError(Code.FailedPrecondition, reason, message, metadata);

export const unauthenticated = (reason: string, message: string) =>
  new DomainError(Code.Unauthenticated, reason, message);

export const permissionDenied = (reason: string, message: string, metadata: Record<string, string> = {}) =>
  new DomainError(Code.PermissionDenied, reason, message, metadata);

export const unavailable = (reason: string, message: string) => new DomainError(Code.Unavailable, reason, message);

/** Builds the ConnectError a client sees, with its ErrorInfo detail. */
export function connectError(code: Code, reason: string, message: string, metadata: Record<string, string> = {}) {
  return new ConnectError(message, code, undefined, [
    { desc: ErrorInfoSchema, value: create(ErrorInfoSchema, { reason, domain: ERROR_DOMAIN, metadata }) },
  ]);
}

/**
 * THE mapper from anything thrown inside a handler to what the client sees. Domain
 * errors keep their code and reason; ConnectErrors pass through (connect's own refusals
 * of an undecodable request become INVALID_ARGUMENT, see `protocolError`; ErrorInfo is
 * added when missing); a client that hung up is CANCELED; anything else is a bug:
 * INTERNAL with the request id, the cause is logged by the caller and never sent.
 * `signal` is the call's: an aborted one tells a reset connection from a database's.
 */
export function toConnectError(
  err: unknown,
  requestId: string,
  signal?: AbortSignal,
): { error: ConnectError; internal: boolean; databaseDown?: boolean } {
  if (err instanceof DomainError) {
    return { error: connectError(err.code, err.reason, err.message, err.metadata), internal: false };
  }
  // An abort surfacing from a stopped call means what stopped it: its deadline, its client, the shutdown.
  if (
    signal?.aborted &&
    signal.reason instanceof ConnectError &&
    (err as { name?: unknown } | undefined)?.name === "AbortError"
  )
    err = signal.reason;
  if (isHangUp(err, signal)) {
    return { error: connectError(Code.Canceled, "CANCELED", "the client went away"), internal: false };
  }
  if (err instanceof ConnectError) {
    if (err.details.length === 0) {
      const error = protocolError(err);
      if (error.code !== Code.Internal && error.code !== Code.Unknown) return { error, internal: false };
    }
    if (err.code === Code.Unknown || err.code === Code.Internal)
      return { error: internalError(requestId), internal: true };
    return { error: err, internal: false };
  }
  if (isDatabaseDown(err)) {
    return {
      error: connectError(Code.Unavailable, "DATABASE_UNAVAILABLE", "the database is unreachable; retry later", {
        request_id: requestId,
      }),
      // Not a fault of ours: the caller logs it as the database's state (a warning), not as an internal error.
      internal: false,
      databaseDown: true,
    };
  }
  return { error: internalError(requestId), internal: true };
}

/**
 * Why the server's open calls stop when it shuts down: streams it ends then end cleanly
 * (their clients reconnect elsewhere); anything else their signal says is the client's
 * doing (gone) or its deadline.
 */
export const shuttingDown = () => new ConnectError("the server is shutting down", Code.Unavailable);

/** A code as Connect writes it on the wire (`invalid_argument`): the one spelling of logs and metrics. */
export const codeName = (code: Code | undefined): string => (code === undefined ? "ok" : codeToString(code));

/** The ErrorInfo reason of a bare ConnectError: its code in UPPER_SNAKE_CASE. */
const reasonOf = (code: Code) => codeToString(code).toUpperCase();

/*
 * connect-es refuses what it cannot decode with ConnectErrors that carry only a message,
 * some of them INTERNAL ("parse binary: …", "decompression failed"). Matched on their
 * messages (connect 2.2.0 and protobuf-es 2.17 are pinned; test/e2e/edge.test.ts pins
 * each case), they become INVALID_ARGUMENT MALFORMED_REQUEST, UNKNOWN_FIELD, or
 * RESOURCE_EXHAUSTED MESSAGE_TOO_LARGE, each with ErrorInfo.
 */
const UNKNOWN_JSON_KEY = /^cannot decode message (\S+) from JSON: key "(.*)" is unknown$/s;
const BAD_JSON_FIELD = /^cannot decode field (\S+)\.([^.\s]+) from JSON: (.*)$/s;
const TOO_LARGE = /^message (?:size (?:\d+ )?is|is) larger than configured readMaxBytes (\d+)/;
const MALFORMED_INTERNAL =
  /^(parse binary: |decompression failed$|received compressed envelope, but do not know how to decompress$)/;
const WRONG_MESSAGE_COUNT = /^protocol error: (missing input message|received extra input message)/;

/**
 * The client-facing form of a ConnectError that carries no detail (one from connect's
 * protocol layer, or a plain one of ours): a request that cannot be decoded is the
 * client's mistake, never INTERNAL; the rest keep their code and gain an ErrorInfo.
 */
export function protocolError(err: ConnectError): ConnectError {
  const message = err.rawMessage;
  switch (err.code) {
    case Code.InvalidArgument: {
      const unknown = UNKNOWN_JSON_KEY.exec(message);
      if (unknown) {
        return connectError(
          Code.InvalidArgument,
          "UNKNOWN_FIELD",
          `${unknown[2]}: unknown field (${unknown[1]} has no field of this name)`,
          { field: unknown[2] },
        );
      }
      const bad = BAD_JSON_FIELD.exec(message);
      if (bad) {
        return connectError(Code.InvalidArgument, "MALFORMED_REQUEST", `${bad[2]}: ${bad[3]}`, { field: bad[2] });
      }
      return malformed(message);
    }
    case Code.Internal:
      return MALFORMED_INTERNAL.test(message) ? malformed(message) : err;
    case Code.Unimplemented:
      return WRONG_MESSAGE_COUNT.test(message)
        ? malformed(message)
        : connectError(err.code, reasonOf(err.code), message);
    case Code.ResourceExhausted: {
      const m = TOO_LARGE.exec(message);
      if (m) {
        return connectError(
          Code.ResourceExhausted,
          "MESSAGE_TOO_LARGE",
          `the request is larger than the ${m[1]} bytes this server reads`,
          { limit_bytes: m[1] },
        );
      }
      return connectError(err.code, reasonOf(err.code), message);
    }
    case Code.Unknown:
      return err;
    default:
      return connectError(err.code, reasonOf(err.code), message);
  }
}

const malformed = (detail: string) =>
  connectError(Code.InvalidArgument, "MALFORMED_REQUEST", `malformed request: ${detail}`);

/** Node's and connect's ways of saying the client reset the stream or closed the connection. */
const HANG_UPS = new Set([
  "ERR_STREAM_PREMATURE_CLOSE",
  "ERR_STREAM_DESTROYED",
  "ERR_HTTP2_INVALID_STREAM",
  "ERR_HTTP2_STREAM_CANCEL",
  "ERR_STREAM_WRITE_AFTER_END",
]);

/** Whether `err` is a client hanging up (a reset stream, a closed connection), not a failure of ours. */
export function isHangUp(err: unknown, signal?: AbortSignal): boolean {
  let e: unknown = err;
  for (let depth = 0; e && depth < 4; depth++) {
    if (e instanceof ConnectError && e.code === Code.Canceled) return true;
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && HANG_UPS.has(code)) return true;
    // A reset socket or an abort is the client's only while the call's own signal says so (else: the database's).
    if (
      signal?.aborted &&
      (code === "ECONNRESET" ||
        code === "EPIPE" ||
        code === "ECANCELED" ||
        (e as { name?: unknown }).name === "AbortError")
    )
      return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

function internalError(requestId: string) {
  return connectError(Code.Internal, "INTERNAL", `internal error (request id ${requestId})`, { request_id: requestId });
}

const CONNECTION_ERRORS = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "57P01",
  "57P03",
  "08006",
  "08001",
]);

const PG_CONNECTION_LOST = new RegExp(
  [
    "Connection terminated",
    "timeout exceeded when trying to connect",
    "encountered a connection error and is not queryable",
    "Client was closed and is not queryable",
  ].join("|"),
  "i",
);

function isDatabaseDown(err: unknown): boolean {
  let e: unknown = err;
  for (let depth = 0; e && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && CONNECTION_ERRORS.has(code)) return true;
    const msg = (e as { message?: unknown }).message;
    // (pg's own wording: a dropped connection; a query on a client that lost its connection — the next statement of a
    // transaction whose server died under it)
    if (typeof msg === "string" && PG_CONNECTION_LOST.test(msg)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}
