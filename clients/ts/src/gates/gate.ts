/*
 * requireLicense() / requireFeature(name): gates over a license source. Each gate answers
 * `check()` (never throws) and is a Connect interceptor for a vendor's own Connect services;
 * "@licensd/client/node" adds the plain Node HTTP and Express-style forms.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { decide, type GateDecision, type LicenseSource } from "./license-info.js";

export interface Gate {
  /** The decision as of now. Never throws. */
  check(): GateDecision;
  /**
   * Refuses calls to the services it is installed on while the check fails: FAILED_PRECONDITION, reason
   * LICENSE_REQUIRED, without a valid license; PERMISSION_DENIED, reason FEATURE_NOT_LICENSED, without the feature.
   * ErrorInfo domain "licensd.dev", metadata `license_code` and `feature`. Streams are checked when they open.
   */
  interceptor: Interceptor;
}

/** The ConnectError a refused call gets. */
export function gateError(decision: Extract<GateDecision, { allowed: false }>): ConnectError {
  const [code, reason] =
    decision.missing === "license"
      ? [Code.FailedPrecondition, "LICENSE_REQUIRED"]
      : [Code.PermissionDenied, "FEATURE_NOT_LICENSED"];
  const metadata: Record<string, string> = { license_code: decision.info.code };
  if (decision.feature !== null) metadata.feature = decision.feature;
  if (decision.info.tier) metadata.tier = decision.info.tier;
  return new ConnectError(decision.message, code, undefined, [
    { desc: ErrorInfoSchema, value: create(ErrorInfoSchema, { reason, domain: "licensd.dev", metadata }) },
  ]);
}

export function gate(source: LicenseSource, feature: string | null): Gate {
  const check = () => decide(source, feature);
  return {
    check,
    interceptor: (next) => (req) => {
      const decision = check();
      if (!decision.allowed) throw gateError(decision);
      return next(req);
    },
  };
}

/** A gate that lets requests through while `source` holds a valid license. */
export const requireLicense = (source: LicenseSource): Gate => gate(source, null);

/** A gate that lets requests through while `source` holds a valid license that entitles `feature`. */
export const requireFeature = (source: LicenseSource, feature: string): Gate => gate(source, feature);
