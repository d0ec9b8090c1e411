import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../../gen/ts/google/rpc/error_details_pb.js";

/** Awaits a call that must fail; returns its code, message and ErrorInfo as a client sees them. */
export async function failure(call: Promise<unknown>) {
  try {
    await call;
  } catch (err) {
    const e = ConnectError.from(err);
    const [info] = e.findDetails(ErrorInfoSchema);
    return {
      code: Code[e.code],
      message: e.rawMessage,
      reason: info?.reason,
      domain: info?.domain,
      metadata: info?.metadata ?? {},
    };
  }
  throw new Error("expected the call to fail, but it succeeded");
}
