import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import { actorOf, requireTenant, type Principal, type Scope } from "./auth.js";
import { principalKey } from "./context.js";
import { sql, type EntityManager } from "./db.js";
import { notFound } from "./errors.js";
import type { Idempotency } from "./idempotency.js";

/** What every mutating handler needs: the tenant acted on, the actor, and an idempotent transaction. */
export interface MutationContext {
  tenantId: string;
  actor: string;
}

/** `package.Service/Method` of the call being handled. */
export const procedureOf = (ctx: HandlerContext) => `${ctx.service.typeName}/${ctx.method.name}`;

/**
 * Runs a tenant-scoped mutation: checks the caller may act on the tenant with `scope`,
 * then runs `fn` in one transaction under the request's idempotency key.
 */
export function tenantMutation<I extends DescMessage, O extends DescMessage>(
  idempotency: Idempotency,
  ctx: HandlerContext,
  call: {
    requestSchema: I;
    request: MessageShape<I> & { idempotencyKey: string; tenantId: string };
    responseSchema: O;
    scope?: Scope;
  },
  fn: (em: EntityManager, m: MutationContext) => Promise<MessageShape<O>>,
): Promise<MessageShape<O>> {
  const principal = ctx.values.get(principalKey);
  const tenantId = requireTenant(principal, call.request.tenantId, call.scope ?? "admin");
  const m = { tenantId, actor: actorOf(principal) };
  return idempotency.run(
    {
      scope: tenantId,
      procedure: procedureOf(ctx),
      requestSchema: call.requestSchema,
      request: call.request,
      responseSchema: call.responseSchema,
    },
    async (em) => {
      await requireLiveTenant(em, principal, tenantId);
      return fn(em, m);
    },
  );
}

/**
 * The super-admin names tenants by id: writing into one that does not exist, or was
 * deleted, is NOT_FOUND (a tenant key's own tenant was checked when the key resolved).
 * Raw SQL: platform/ knows the tenants table, not the tenants domain.
 */
export async function requireLiveTenant(em: EntityManager, principal: Principal, tenantId: string): Promise<void> {
  if (principal.kind !== "super_admin") return;
  const rows = await sql<{ id: string }>(
    em,
    `select id from tenants where id = $1 and deleted_at is null for key share`,
    [tenantId],
  );
  if (rows.length === 0) throw notFound("tenant", tenantId);
}

/** The tenant a read acts on, for a caller with `scope` (default read). */
export const readTenant = (ctx: HandlerContext, tenantId: string, scope: Scope = "read") =>
  requireTenant(ctx.values.get(principalKey), tenantId, scope);
