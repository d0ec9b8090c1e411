import { existsSync, readdirSync, readFileSync } from "node:fs";
import type http from "node:http";
import path from "node:path";

/**
 * The admin console's built files (console/dist, made by `npm run build`), served at
 * /console on the API's port. Only static files: every piece of data the console shows
 * comes from the API, with the API key the browser holds, so nothing here bypasses the
 * API's authentication. Written by hand: a fixed set of files read once at start, which
 * no static-file library would make shorter.
 */
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const SECURITY_HEADERS = {
  "content-security-policy": CSP,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
};

const TYPES: Record<string, string> = {
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff2": "font/woff2",
  ".json": "application/json",
  ".html": "text/html; charset=utf-8",
};

interface Asset {
  body: Buffer;
  type: string;
}

/** Where the built console is: console/dist beside the package root (from src/ or from dist/src/). */
export function findConsoleDir(from = import.meta.dirname): string | undefined {
  for (let dir = from, i = 0; i < 6; i++, dir = path.dirname(dir)) {
    const candidate = path.join(dir, "console", "dist");
    if (existsSync(path.join(candidate, "index.html"))) return candidate;
  }
  return undefined;
}

/** A handler for /console…: true when it answered the request. */
export function createConsoleHandler(dir: string | undefined) {
  const index = dir ? readFileSync(path.join(dir, "index.html")) : undefined;
  const assets = new Map<string, Asset>();
  if (dir && existsSync(path.join(dir, "assets"))) {
    for (const name of readdirSync(path.join(dir, "assets"))) {
      assets.set(name, {
        body: readFileSync(path.join(dir, "assets", name)),
        type: TYPES[path.extname(name)] ?? "application/octet-stream",
      });
    }
  }
  return (req: http.IncomingMessage, res: http.ServerResponse, urlPath: string): boolean => {
    if (urlPath !== "/console" && !urlPath.startsWith("/console/")) return false;
    const send = (status: number, headers: Record<string, string>, body?: Buffer | string) => {
      res.writeHead(status, { ...SECURITY_HEADERS, ...headers });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") {
      send(405, { allow: "GET, HEAD", "content-type": "text/plain" }, "method not allowed\n");
      return true;
    }
    if (!index) {
      send(
        503,
        { "content-type": "text/plain", "cache-control": "no-store" },
        "the console is not built: run npm run build\n",
      );
      return true;
    }
    if (urlPath === "/console") {
      send(308, { location: "/console/", "cache-control": "no-store" });
      return true;
    }
    if (urlPath === "/console/" || urlPath === "/console/index.html") {
      // Uncached: it names the hashed assets of the build being served.
      send(200, { "content-type": TYPES[".html"]!, "cache-control": "no-store" }, index);
      return true;
    }
    const name = urlPath.startsWith("/console/assets/") ? urlPath.slice("/console/assets/".length) : "";
    const asset = /^[A-Za-z0-9._-]+$/.test(name) ? assets.get(name) : undefined;
    if (!asset) {
      send(404, { "content-type": "text/plain", "cache-control": "no-store" }, "not found\n");
      return true;
    }
    // Hashed names: a new build has new names, so these never change.
    send(200, { "content-type": asset.type, "cache-control": "public, max-age=31536000, immutable" }, asset.body);
    return true;
  };
}
