import { createContextKey } from "@connectrpc/connect";

export type Scope = "admin" | "read" | "ingest";

/** Who is calling. Set once per request by the auth interceptor. */
export type Principal =
  | { kind: "super_admin" }
  | { kind: "tenant"; tenantId: string; keyId: string; scopes: ReadonlySet<Scope> }
  | { kind: "anonymous" };

/** Who is calling; set by the auth interceptor for every request. */
export const principalKey = createContextKey<Principal>({ kind: "anonymous" }, { description: "licensd principal" });

/** The request id: the caller's `x-request-id` when sane, else a fresh one. */
export const requestIdKey = createContextKey<string>("", { description: "licensd request id" });

/**
 * The client's address: the TCP peer, or what trusted proxies say it is (client-address.ts); never taken from the
 * request body.
 */
export const peerAddressKey = createContextKey<string>("", { description: "licensd peer address" });
