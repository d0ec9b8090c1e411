import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import * as pb from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import type { Database } from "../platform/db.js";
import type { Idempotency } from "../platform/idempotency.js";
import type { PageTokens } from "../platform/pagination.js";
import { procedureOf, readTenant, tenantMutation } from "../platform/rpc.js";
import type { LicenseUserService } from "./license-user.service.js";
import type { LicenseUser } from "./licensing.entity.js";

type LicensingImpl = ServiceImpl<typeof pb.LicensingService>;
export type LicenseUserMethods = "addLicenseUser" | "listLicenseUsers" | "removeLicenseUser";

export const licenseUserToProto = (u: LicenseUser) =>
  create(pb.LicenseUserSchema, {
    id: u.id,
    tenantId: u.tenantId,
    licenseId: u.licenseId,
    user: u.identity,
    name: u.name,
    metadata: u.metadata,
    createTime: timestampFromDate(u.createdAt),
  });

/** License users of licensd.licensing.v1.LicensingService. */
export function createLicenseUserRpc(deps: {
  db: Database;
  idempotency: Idempotency;
  users: LicenseUserService;
  pages: PageTokens;
}): Pick<LicensingImpl, LicenseUserMethods> {
  const { db, idempotency, users, pages } = deps;
  return {
    addLicenseUser: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.AddLicenseUserRequestSchema,
          request: req,
          responseSchema: pb.AddLicenseUserResponseSchema,
        },
        async (em, m) => {
          const user = await users.add(em, m.tenantId, m.actor, {
            licenseId: req.licenseId,
            user: req.user,
            name: req.name,
            metadata: req.metadata,
          });
          return create(pb.AddLicenseUserResponseSchema, { licenseUser: licenseUserToProto(user) });
        },
      ),

    async listLicenseUsers(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const page = pages.read(req.pageSize, req.pageToken, {
        list: procedureOf(ctx),
        tenantId,
        filters: { licenseId: req.licenseId },
      });
      // From the primary: a user just added is listed by the next call, whatever instance answers.
      const rows = await users.list(db.em(), tenantId, req.licenseId, page);
      const { items, nextPageToken } = pages.pageOf(rows, page);
      return create(pb.ListLicenseUsersResponseSchema, { licenseUsers: items.map(licenseUserToProto), nextPageToken });
    },

    removeLicenseUser: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.RemoveLicenseUserRequestSchema,
          request: req,
          responseSchema: pb.RemoveLicenseUserResponseSchema,
        },
        async (em, m) => {
          const user = await users.remove(em, m.tenantId, m.actor, req.licenseId, req.user);
          return create(pb.RemoveLicenseUserResponseSchema, { licenseUser: licenseUserToProto(user) });
        },
      ),
  };
}
