import type { Code } from "@connectrpc/connect";
import { createLicensdClient, describeError, type LicensdClient } from "@licensd/client";

/** The key lives in sessionStorage: it is gone when the tab closes, and sign-out clears it. */
const KEY = "licensd.console.key";

export interface Session {
  client: LicensdClient;
  /** The super-admin acts on the tenant picked in the header; a tenant key on its own (""). */
  superAdmin: boolean;
  /** The tenant a tenant key belongs to. */
  ownTenantId: string;
  ownTenantName: string;
}

export const storedKey = () => sessionStorage.getItem(KEY) ?? "";
export const forgetKey = () => sessionStorage.removeItem(KEY);

export function clientFor(key: string): LicensdClient {
  return createLicensdClient({ baseUrl: location.origin, apiKey: key, timeoutMs: 30_000 });
}

/**
 * Signs in: finds out whether the key is the super-admin's (it may list tenants) or a
 * tenant's (it reads its own tenant). A refused key is an error with a readable message.
 */
export async function signIn(key: string): Promise<Session> {
  const client = clientFor(key);
  try {
    await client.tenant.listTenants({ pageSize: 1 });
    sessionStorage.setItem(KEY, key);
    return { client, superAdmin: true, ownTenantId: "", ownTenantName: "" };
  } catch (err) {
    const d = describeError(err);
    if (d.codeName !== "permission_denied") throw err;
  }
  const { tenant } = await client.tenant.getTenant({ id: "" });
  sessionStorage.setItem(KEY, key);
  return { client, superAdmin: false, ownTenantId: tenant?.id ?? "", ownTenantName: tenant?.name ?? "" };
}

/** One line a person can read, from any error an RPC threw. */
export function errorText(err: unknown): string {
  const d = describeError(err);
  const fields = d.fieldViolations.map((v) => `${v.field}: ${v.description}`).join("; ");
  const base = d.message || d.codeName;
  const shown = fields && !base.includes(fields) ? `${base} (${fields})` : base;
  return d.reason && d.reason !== d.codeName.toUpperCase() ? `${shown} [${d.reason}]` : shown;
}

export const isCode = (err: unknown, code: Code) => describeError(err).code === code;
