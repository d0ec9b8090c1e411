import type { Clock } from "../platform/clock.js";
import { type EntityManager, flushUnique } from "../platform/db.js";
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "../platform/errors.js";
import { newId } from "../platform/ids.js";
import type { Page } from "../platform/pagination.js";
import type { Events } from "../events/events.js";
import type { CatalogService } from "./catalog.service.js";
import type { LicenseService } from "./license.service.js";
import { LicenseUser } from "./licensing.entity.js";

const EMAIL = /^[^@]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$/;

/**
 * How a user is kept and matched: an e-mail (anything with `@`) in lowercase, as customers'
 * e-mails are matched; the vendor's user id as given (ids are case-sensitive).
 */
export const userIdentity = (user: string) => (user.includes("@") ? user.toLowerCase() : user);

/** The identity of a user named in a request; INVALID_ARGUMENT for a value with `@` that is no e-mail. */
export function checkedUserIdentity(user: string, field = "user"): string {
  if (user.includes("@") && !EMAIL.test(user))
    throw invalidArgument(field, "a user with @ must be an e-mail (name@domain)", "USER_INVALID");
  return userIdentity(user);
}

export interface NewLicenseUser {
  licenseId: string;
  user: string;
  name: string;
  metadata: Record<string, string>;
}

/** Users attached to licenses, at most the policy's max_users each. Every method runs in the caller's transaction. */
export function createLicenseUserService(deps: {
  clock: Clock;
  events: Events;
  catalog: CatalogService;
  licenses: LicenseService;
}) {
  const { clock, events, catalog, licenses } = deps;

  const emit = (em: EntityManager, u: LicenseUser, actor: string, type: string) =>
    events.emit(em, {
      tenantId: u.tenantId,
      type,
      subject: u.licenseId,
      actor,
      payload: { license_user_id: u.id, user: u.identity },
    });

  return {
    /**
     * Attaches a user under the license's row lock, so concurrent adds on any instance
     * count each other: at most max_users (0: no limit).
     */
    async add(em: EntityManager, tenantId: string, actor: string, input: NewLicenseUser): Promise<LicenseUser> {
      const identity = checkedUserIdentity(input.user);
      const license = await licenses.get(em, tenantId, input.licenseId, true);
      const policy = await catalog.getPolicy(em, tenantId, license.policyId);
      if (await em.findOne(LicenseUser, { licenseId: license.id, identity }))
        throw alreadyExists("LICENSE_USER_EXISTS", `license ${license.id} already has user ${identity}`, {
          license_id: license.id,
          user: identity,
        });
      const count = await em.count(LicenseUser, { licenseId: license.id });
      if (policy.maxUsers > 0 && count >= policy.maxUsers)
        throw failedPrecondition(
          "LICENSE_USERS_LIMIT",
          `the license has ${count} users, the most its policy allows (max_users ${policy.maxUsers}); remove one first`,
          { license_id: license.id, max_users: String(policy.maxUsers) },
        );
      const now = clock.now();
      const user = em.create(LicenseUser, {
        id: newId("lusr"),
        tenantId,
        licenseId: license.id,
        identity,
        name: input.name,
        metadata: input.metadata,
        createdAt: now,
        updatedAt: now,
      });
      // Unreachable under the license lock; kept so a race is never an INTERNAL error.
      await flushUnique(em, () =>
        alreadyExists("LICENSE_USER_EXISTS", `license ${license.id} already has user ${identity}`),
      );
      await emit(em, user, actor, "license.user_added");
      return user;
    },

    /** One page of a license's users, oldest first; NOT_FOUND for a license not in the tenant. */
    async list(em: EntityManager, tenantId: string, licenseId: string, page: Page): Promise<LicenseUser[]> {
      await licenses.get(em, tenantId, licenseId);
      return em.find(
        LicenseUser,
        { tenantId, licenseId, ...(page.after === undefined ? {} : { id: { $gt: page.after } }) },
        { orderBy: { id: "asc" }, limit: page.size + 1 },
      );
    },

    /** Detaches a user (matched as kept: an e-mail in any case); NOT_FOUND when the license has no such user. */
    async remove(em: EntityManager, tenantId: string, actor: string, licenseId: string, user: string) {
      const license = await licenses.get(em, tenantId, licenseId, true);
      const found = await em.findOne(LicenseUser, { licenseId: license.id, identity: userIdentity(user) });
      if (!found) throw notFound("license user", user);
      em.remove(found);
      await em.flush();
      await emit(em, found, actor, "license.user_removed");
      return found;
    },
  };
}

export type LicenseUserService = ReturnType<typeof createLicenseUserService>;
