import type http from "node:http";
import type { Logger } from "../platform/logger.js";
import type { PaymentProvider } from "./payment-events.js";
import type { HookAnswer, ProvisioningService } from "./provisioning.service.js";

const HOOK_PATH = /^\/hooks\/(stripe|polar)\/(psrc_[0-9a-z]{26})$/;

/** Both HTTP/1.1's and HTTP/2's compatibility request (server.ts serves both on one port). */
type HookRequest = Pick<http.IncomingMessage, "method" | "headers"> & AsyncIterable<Buffer>;
type HookResponse = Pick<http.ServerResponse, "writeHead" | "end">;

/** A body over `maxBytes`, refused before it is all read. */
class TooLarge extends Error {}

async function readBody(req: HookRequest, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > maxBytes) throw new TooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function answer(res: HookResponse, { status, body }: HookAnswer) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(`${JSON.stringify(body)}\n`);
}

/**
 * The providers' webhook URLs on licensd's port: `POST /hooks/stripe/<source id>` and `POST /hooks/polar/<source id>`,
 * plain HTTP as the providers send it (no API key: the signature is the authentication). Returns false for any other
 * path, for the next handler. A database failure is 500, so the provider delivers the event again later.
 */
export function createPaymentHook(deps: { provisioning: ProvisioningService; logger: Logger; maxBytes: number }) {
  const { provisioning, logger, maxBytes } = deps;
  return (req: HookRequest, res: HookResponse, path: string): boolean => {
    if (!path.startsWith("/hooks/")) return false;
    const match = HOOK_PATH.exec(path);
    if (!match) {
      answer(res, { status: 404, body: { error: "not_found", message: "no such hook path" } });
      return true;
    }
    if (req.method !== "POST") {
      res.writeHead(405, { allow: "POST", "content-type": "application/json" });
      res.end(`${JSON.stringify({ error: "method_not_allowed", message: "hooks take POST" })}\n`);
      return true;
    }
    const provider = match[1] as PaymentProvider;
    const sourceId = match[2]!;
    readBody(req, maxBytes)
      .then((body) => provisioning.receive(provider, sourceId, body, req.headers))
      .then(
        (a) => {
          if (a.status >= 400)
            logger.warn({ provider, sourceId, status: a.status, error: a.body.error }, "payment hook refused");
          else logger.info({ provider, sourceId, ...a.body }, "payment hook");
          answer(res, a);
        },
        (err: unknown) => {
          if (err instanceof TooLarge) {
            answer(res, { status: 413, body: { error: "too_large", message: `the body is over ${maxBytes} bytes` } });
            return;
          }
          logger.error({ err, provider, sourceId }, "payment hook failed");
          answer(res, { status: 500, body: { error: "internal", message: "not recorded; deliver it again" } });
        },
      );
    return true;
  };
}
