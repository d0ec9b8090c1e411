import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
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
  new DomainError(Code.NotFound, `${resource.toUpperCase()}_NOT_FOUND`, `${resource} ${JSON.stringify(id)} not found`, {
    resource,
    id,
  });

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
 * errors keep their code and reason; ConnectErrors pass through (adding ErrorInfo when
 * missing); anything else is a bug: INTERNAL with the request id, the cause is logged
 * by the caller and never sent.
 */
export function toConnectError(err: unknown, requestId: string): { error: ConnectError; internal: boolean } {
  if (err instanceof DomainError) {
    return { error: connectError(err.code, err.reason, err.message, err.metadata), internal: false };
  }
  if (err instanceof ConnectError) {
    if (err.details.length === 0 && err.code !== Code.Internal && err.code !== Code.Unknown) {
      const reason = Code[err.code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
      return { error: connectError(err.code, reason, err.rawMessage, {}), internal: false };
    }
    if (err.code === Code.Unknown || err.code === Code.Internal) return { error: internalError(requestId), internal: true };
    return { error: err, internal: false };
  }
  if (isDatabaseDown(err)) {
    return {
      error: connectError(Code.Unavailable, "DATABASE_UNAVAILABLE", "the database is unreachable; retry later", {
        request_id: requestId,
      }),
      internal: true,
    };
  }
  return { error: internalError(requestId), internal: true };
}

function internalError(requestId: string) {
  return connectError(Code.Internal, "INTERNAL", `internal error (request id ${requestId})`, { request_id: requestId });
}

const CONNECTION_ERRORS = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "57P01", "57P03", "08006", "08001"]);

function isDatabaseDown(err: unknown): boolean {
  let e: unknown = err;
  for (let depth = 0; e && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && CONNECTION_ERRORS.has(code)) return true;
    const msg = (e as { message?: unknown }).message;
    if (typeof msg === "string" && /Connection terminated|timeout exceeded when trying to connect/i.test(msg)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}
