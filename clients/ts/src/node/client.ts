/*
 * createLicensdClient for Node: the fetch protocols of "@licensd/client" plus gRPC over
 * HTTP/2 (@connectrpc/connect-node, an optional peer dependency, imported only here so
 * browser bundles never see it). HTTP/2 carries every RPC, the client and bidirectional
 * streams included (ConnectLease, IngestUsage, StreamUsage, ImportLicenses).
 */
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  createLicensdClient as createFetchClient,
  type LicensdClient,
  type LicensdClientOptions,
  type Protocol,
} from "../client.js";

export interface LicensdNodeClientOptions extends Omit<LicensdClientOptions, "protocol"> {
  /** "connect" (default) and "grpc-web" over fetch, or "grpc" over HTTP/2 (cleartext h2c for http:// URLs). */
  protocol?: Protocol | "grpc";
}

export function createLicensdClient(options: LicensdNodeClientOptions): LicensdClient {
  if (options.protocol !== "grpc" || options.transport) {
    const { protocol, ...rest } = options;
    return createFetchClient({ ...rest, protocol: protocol === "grpc" ? undefined : protocol });
  }
  // One HTTP/2 connection, with pings so a connection that died silently is noticed; close() ends it.
  const sessions = new Http2SessionManager(options.baseUrl, { pingIntervalMs: 30_000, pingTimeoutMs: 10_000 });
  const transport = createGrpcTransport({ baseUrl: options.baseUrl, sessionManager: sessions });
  const { protocol: _grpc, ...rest } = options;
  return { ...createFetchClient({ ...rest, transport }), close: () => sessions.abort() };
}
