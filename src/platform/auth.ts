import type { Interceptor } from "@connectrpc/connect";
import { peerAddressKey, principalKey, type Principal, type Scope } from "./context.js";
import type { KeyFailureLimit } from "./key-failures.js";
import { secretsEqual } from "./crypto.js";
import { invalidArgument, notFound, permissionDenied, unauthenticated } from "./errors.js";

// (defined beside the context key that carries them, so context.ts needs nothing of this file)
export type { Principal, Scope };

/** Resolves a tenant API key's secret to its principal, or undefined when it is not live. */
export type ApiKeyResolver = (secret: string) => Promise<Principal | undefined>;

/**
 * Turns `Authorization: Bearer <token>` into a Principal in the handler context. No
 * header means anonymous (public RPCs take their own credential, e.g. a license key);
 * a header that names no live key is refused at once, and counts as a failed key lookup
 * of the client's address (which, once blocked, has no key looked up).
 */
export function createAuthInterceptor(
  superAdminKey: string,
  resolveApiKey: ApiKeyResolver,
  keyFailures?: KeyFailureLimit,
): Interceptor {
  return (next) => async (req) => {
    const header = req.header.get("authorization");
    if (header !== null) {
      const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
      if (!match) throw unauthenticated("MALFORMED_AUTHORIZATION", "authorization header must be `Bearer <key>`");
      const token = match[1];
      const address = req.contextValues.get(peerAddressKey);
      keyFailures?.refuseIfBlocked(address);
      let principal: Principal | undefined;
      if (secretsEqual(token, superAdminKey)) principal = { kind: "super_admin" };
      else if (token.startsWith("lsk_")) principal = await resolveApiKey(token);
      if (!principal) {
        await keyFailures?.failed(address);
        throw unauthenticated("INVALID_API_KEY", "the API key is unknown, revoked or expired");
      }
      req.contextValues.set(principalKey, principal);
    }
    return next(req);
  };
}

export function requireSuperAdmin(principal: Principal): void {
  if (principal.kind === "anonymous")
    throw unauthenticated("MISSING_API_KEY", "this call needs `Authorization: Bearer <key>`");
  if (principal.kind !== "super_admin") {
    throw permissionDenied("SUPER_ADMIN_REQUIRED", "this call needs the super-admin key");
  }
}

/**
 * The tenant a call acts on. The super-admin names any tenant; a tenant key acts on its
 * own tenant (an empty id means "mine") and needs `scope`; naming another tenant looks
 * exactly like naming a tenant that does not exist.
 */
export function requireTenant(principal: Principal, tenantId: string, scope: Scope, field = "tenant_id"): string {
  if (principal.kind === "anonymous")
    throw unauthenticated("MISSING_API_KEY", "this call needs `Authorization: Bearer <key>`");
  if (principal.kind === "super_admin") {
    if (tenantId === "") throw invalidArgument(field, "required when calling with the super-admin key");
    return tenantId;
  }
  if (tenantId !== "" && tenantId !== principal.tenantId) throw notFound("tenant", tenantId);
  if (!hasScope(principal, scope)) {
    throw permissionDenied("SCOPE_REQUIRED", `this call needs an API key with the ${scope} scope`, { scope });
  }
  return principal.tenantId;
}

/** admin implies every scope; read is implied by admin only. */
export function hasScope(principal: Principal, scope: Scope): boolean {
  if (principal.kind === "super_admin") return true;
  if (principal.kind !== "tenant") return false;
  return principal.scopes.has("admin") || principal.scopes.has(scope);
}

/** How the audit log names who made a change. */
export function actorOf(principal: Principal): string {
  switch (principal.kind) {
    case "super_admin":
      return "super_admin";
    case "tenant":
      return `key:${principal.keyId}`;
    default:
      return "anonymous";
  }
}
