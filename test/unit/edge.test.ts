import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/ts/google/rpc/error_details_pb.js";
import { codeName, isHangUp, protocolError, toConnectError } from "../../src/platform/errors.js";
import { encodeGrpcMessage } from "../../src/platform/grpc-message.js";

const mapped = (err: ConnectError) => {
  const e = protocolError(err);
  return { code: codeName(e.code), message: e.rawMessage, ...e.findDetails(ErrorInfoSchema)[0] };
};

describe("connect's refusals, as the client sees them", () => {
  it("undecodable bytes, JSON and frames are INVALID_ARGUMENT MALFORMED_REQUEST; never INTERNAL", () => {
    for (const [code, message] of [
      [Code.Internal, "parse binary: premature EOF"],
      [Code.Internal, "decompression failed"],
      [Code.Internal, "received compressed envelope, but do not know how to decompress"],
      [
        Code.InvalidArgument,
        "cannot decode message licensd.tenant.v1.CreateTenantRequest from JSON: Unexpected end of JSON input",
      ],
      [Code.InvalidArgument, "protocol error: incomplete envelope"],
      [Code.Unimplemented, "protocol error: missing input message for unary method"],
    ] as const) {
      expect(mapped(new ConnectError(message, code)), message).toMatchObject({
        code: "invalid_argument",
        reason: "MALFORMED_REQUEST",
        domain: "licensd.dev",
      });
    }
  });

  it("names the field of an unknown JSON key or a value of the wrong type", () => {
    expect(
      mapped(
        new ConnectError(
          'cannot decode message licensd.x.v1.Req from JSON: key "floatng" is unknown',
          Code.InvalidArgument,
        ),
      ),
    ).toMatchObject({
      message: "floatng: unknown field (licensd.x.v1.Req has no field of this name)",
      reason: "UNKNOWN_FIELD",
      metadata: { field: "floatng" },
    });
    expect(
      mapped(
        new ConnectError(
          "cannot decode field licensd.x.v1.Req.max_machines from JSON: expected number, got true",
          Code.InvalidArgument,
        ),
      ),
    ).toMatchObject({
      message: "max_machines: expected number, got true",
      reason: "MALFORMED_REQUEST",
      metadata: { field: "max_machines" },
    });
  });

  it("a message over the read limit is RESOURCE_EXHAUSTED with the limit", () => {
    expect(
      mapped(
        new ConnectError("message size 5000000 is larger than configured readMaxBytes 4194304", Code.ResourceExhausted),
      ),
    ).toMatchObject({
      code: "resource_exhausted",
      reason: "MESSAGE_TOO_LARGE",
      metadata: { limit_bytes: "4194304" },
    });
  });

  it("other INTERNAL errors stay bugs: INTERNAL, cause logged, never sent", () => {
    expect(protocolError(new ConnectError("serialize binary: oops", Code.Internal)).code).toBe(Code.Internal);
    expect(toConnectError(new ConnectError("serialize binary: oops", Code.Internal), "r").internal).toBe(true);
  });
});

describe("a client hanging up", () => {
  it("is CANCELED, not an internal error, whatever shape it takes", () => {
    const premature = Object.assign(new Error("Premature close"), { code: "ERR_STREAM_PREMATURE_CLOSE" });
    expect(toConnectError(premature, "r")).toMatchObject({ internal: false, error: { code: Code.Canceled } });
    expect(isHangUp(new ConnectError("http/2 stream closed with error code CANCEL (0x8)", Code.Canceled))).toBe(true);
    const aborted = new AbortController();
    aborted.abort();
    const reset = Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" });
    expect(isHangUp(reset, aborted.signal)).toBe(true);
    // The same reset with the call still running is the database's connection: not the client's.
    expect(isHangUp(reset, new AbortController().signal)).toBe(false);
    // A write cancelled under a stream the client closed (libuv's ECANCELED), seen in the fuzz suite's TailAuditEvents.
    const cancelled = Object.assign(new Error("write ECANCELED"), { code: "ECANCELED" });
    expect(isHangUp(cancelled, aborted.signal)).toBe(true);
    expect(isHangUp(cancelled, new AbortController().signal)).toBe(false);
  });

  it("an abort surfacing from a call stopped by its deadline is DEADLINE_EXCEEDED", () => {
    const deadline = new AbortController();
    deadline.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
    const abortError = Object.assign(new Error("The operation was aborted"), { name: "AbortError" });
    expect(toConnectError(abortError, "r", deadline.signal)).toMatchObject({
      internal: false,
      error: { code: Code.DeadlineExceeded },
    });
  });
});

describe("grpc-message", () => {
  it("is percent-encoded as PROTOCOL-HTTP2.md says: bytes outside 0x20–0x7E and % only", () => {
    expect(encodeGrpcMessage("id: does not match `^(ten_[0-9a-z]{26})?$`")).toBe(
      "id: does not match `^(ten_[0-9a-z]{26})?$`",
    );
    expect(encodeGrpcMessage("100% ü\n😀")).toBe("100%25 %C3%BC%0A%F0%9F%98%80");
    expect(decodeURIComponent(encodeGrpcMessage("a: 100% ü"))).toBe("a: 100% ü");
  });

  it("codes are Connect's wire names", () => {
    expect([undefined, Code.AlreadyExists, Code.InvalidArgument].map(codeName)).toEqual([
      "ok",
      "already_exists",
      "invalid_argument",
    ]);
  });
});

describe("a database that went away", () => {
  it("is UNAVAILABLE DATABASE_UNAVAILABLE in every form pg and MikroORM give it (a failover mid-transaction included)", () => {
    // MikroORM's DriverException keeps pg's message; the failover test saw the "not queryable" one as INTERNAL.
    const forms = [
      new Error("Client has encountered a connection error and is not queryable"),
      new Error("Client was closed and is not queryable"),
      new Error("Connection terminated unexpectedly"),
      Object.assign(new Error("no writable PostgreSQL host"), { code: "08001" }),
      Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" }),
      Object.assign(new Error("driver"), {
        cause: Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }),
      }),
    ];
    for (const err of forms) {
      expect(toConnectError(err, "r").error, err.message).toMatchObject({ code: Code.Unavailable });
    }
    expect(toConnectError(new Error("a bug"), "r").error.code).toBe(Code.Internal);
  });
});
