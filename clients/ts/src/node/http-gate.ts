/*
 * The gates for plain Node HTTP servers and Express-style middleware: a request without a
 * valid license gets 402, one without the feature 403, with HenKaiPan's JSON body
 * {"error":"license_required","feature":…} (plus the license's code and a message).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { gate, type Gate } from "../gates/gate.js";
import type { GateDecision, LicenseSource } from "../gates/license-info.js";

export interface HttpGate extends Gate {
  /** Wraps a plain `http.createServer` handler: it runs only when the check passes. */
  handler<Req extends IncomingMessage, Res extends ServerResponse>(
    listener: (req: Req, res: Res) => void | Promise<void>,
  ): (req: Req, res: Res) => void | Promise<void>;
  /** Express-style middleware (`app.use(gate.middleware)`, `app.get(path, gate.middleware, handler)`). */
  middleware(req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void;
}

/** The answer to a refused request: 402 without a license, 403 without the feature. */
export function refuse(res: ServerResponse, decision: Extract<GateDecision, { allowed: false }>): void {
  const body = JSON.stringify({
    error: "license_required",
    feature: decision.feature,
    code: decision.info.code,
    message: decision.message,
  });
  res.statusCode = decision.missing === "license" ? 402 : 403;
  res.setHeader("content-type", "application/json; charset=utf-8");
  res.setHeader("content-length", Buffer.byteLength(body));
  // The decision can change at any moment (a lease expiring): no cache may hold it.
  res.setHeader("cache-control", "no-store");
  res.end(body);
}

function httpGate(source: LicenseSource, feature: string | null): HttpGate {
  const g = gate(source, feature);
  return {
    ...g,
    handler: (listener) => (req, res) => {
      const decision = g.check();
      if (!decision.allowed) return refuse(res, decision);
      return listener(req, res);
    },
    middleware(_req, res, next) {
      const decision = g.check();
      if (!decision.allowed) return refuse(res, decision);
      next();
    },
  };
}

/** requireLicense with the Node HTTP and Express-style forms. */
export const requireLicense = (source: LicenseSource): HttpGate => httpGate(source, null);

/** requireFeature with the Node HTTP and Express-style forms. */
export const requireFeature = (source: LicenseSource, feature: string): HttpGate => httpGate(source, feature);
