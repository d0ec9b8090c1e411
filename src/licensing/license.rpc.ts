import { create, toJson, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import canonicalize from "canonicalize";
import * as pb from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { LicenseStatus as PbLicenseStatus } from "../../gen/ts/licensd/licensing/v1/license_pb.js";
import type { Clock } from "../platform/clock.js";
import type { Database } from "../platform/db.js";
import type { ReplicaReads } from "../platform/replicas.js";
import type { Idempotency } from "../platform/idempotency.js";
import type { PageTokens } from "../platform/pagination.js";
import { procedureOf, readTenant, requireLiveTenant, tenantMutation } from "../platform/rpc.js";
import type { SigningKeyStore } from "../platform/signing-keys.js";
import { maskPaths, type CatalogMethods } from "./catalog.rpc.js";
import { effectiveStatus, type LicensePatch, type LicenseService } from "./license.service.js";
import type { License } from "./licensing.entity.js";
import {
  agentsFromProto,
  composedAgentToProto,
  composedEntitlementToProto,
  entitlementsFromProto,
  licenseToProto,
  statusFromProto,
} from "./licensing.mapper.js";
import type { LicenseUserMethods } from "./license-user.rpc.js";
import type { ValidationService } from "./validation.service.js";
import type { ValidationAnswers } from "./validation-answer.js";
import type { ImportRow, ImportService } from "./import.service.js";
import { checkedComponents, type Component, type LicenseMachines } from "./license-machines.js";
import { actorOf, requireTenant } from "../platform/auth.js";
import { peerAddressKey, principalKey } from "../platform/context.js";
import { invalidArgument } from "../platform/errors.js";
import type { KeyFailureLimit } from "../platform/key-failures.js";

/** ValidateLicense's components, checked (names unique, with a fingerprint); undefined when it gives none. */
function validatedComponents(req: pb.ValidateLicenseRequest): Component[] | undefined {
  if (req.components.length === 0) return undefined;
  if (!req.fingerprint)
    throw invalidArgument(
      "components",
      "components need a fingerprint (of the machine they belong to)",
      "INVALID_COMPONENTS",
    );
  return checkedComponents(req.components);
}

function importRowFromProto(r: pb.ImportLicensesRequest): ImportRow {
  return {
    productId: r.productId,
    policyId: r.policyId,
    tier: r.tier,
    licenseKey: r.licenseKey,
    customerName: r.customerName,
    customerEmail: r.customerEmail,
    customerOrganization: r.customerOrganization,
    issuedAt: r.issuedAt ? timestampDate(r.issuedAt) : undefined,
    expiresAt: r.expireTime ? timestampDate(r.expireTime) : null,
    status:
      r.status === PbLicenseStatus.SUSPENDED
        ? "suspended"
        : r.status === PbLicenseStatus.REVOKED
          ? "revoked"
          : "active",
    metadata: r.metadata,
  };
}

type LicensingImpl = ServiceImpl<typeof pb.LicensingService>;

/**
 * The bytes ValidateLicense signs: RFC 8785 canonical JSON of the response's proto3 JSON, without kid and signature
 * (docs/formats.md). The server signs the same bytes spliced from a cached answer (validation-answer.ts).
 */
export function validationSigningBytes(res: pb.ValidateLicenseResponse): Buffer {
  // The server signs before it sets kid and signature: no copy needed then.
  const unsigned =
    res.kid === "" && res.signature.length === 0
      ? res
      : create(pb.ValidateLicenseResponseSchema, { ...res, kid: "", signature: new Uint8Array(0) });
  return Buffer.from(canonicalize(toJson(pb.ValidateLicenseResponseSchema, unsigned))!);
}

/** Licenses, validation and composition of licensd.licensing.v1.LicensingService. */
export function createLicenseRpc(deps: {
  db: Database;
  /** Lists and other reads that tolerate bounded staleness (docs/replicas.md). */
  reads: ReplicaReads;
  clock: Clock;
  idempotency: Idempotency;
  licenses: LicenseService;
  validation: ValidationService;
  signingKeys: SigningKeyStore;
  imports: ImportService;
  machines: LicenseMachines;
  pages: PageTokens;
  keyFailures: KeyFailureLimit;
  answers: ValidationAnswers;
}): Omit<LicensingImpl, CatalogMethods | LicenseUserMethods> {
  const {
    db,
    reads,
    clock,
    idempotency,
    licenses,
    validation,
    signingKeys,
    imports,
    machines,
    pages,
    keyFailures,
    answers,
  } = deps;
  const out = (l: License) => licenseToProto(l, effectiveStatus(l, clock.now()));

  /** The lifecycle verbs share one shape: a license id in, the license after the change out. */
  const verb =
    <I extends DescMessage, O extends DescMessage>(requestSchema: I, responseSchema: O, act: typeof licenses.suspend) =>
    (req: MessageShape<I> & { tenantId: string; id: string; idempotencyKey: string }, ctx: HandlerContext) =>
      tenantMutation(idempotency, ctx, { requestSchema, request: req, responseSchema }, async (em, m) =>
        create(responseSchema, {
          license: out(await act(em, m.tenantId, m.actor, req.id)),
        } as unknown as MessageInitShape<O>),
      );

  return {
    createLicense: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        { requestSchema: pb.CreateLicenseRequestSchema, request: req, responseSchema: pb.CreateLicenseResponseSchema },
        async (em, m) => {
          const { license, key } = await licenses.create(em, m.tenantId, m.actor, {
            policyId: req.policyId,
            customerId: req.customerId,
            expiresAt: req.expireTime ? timestampDate(req.expireTime) : undefined,
            entitlementOverrides: entitlementsFromProto(req.entitlementOverrides, "entitlement_overrides"),
            agentOverrides: agentsFromProto(req.agentOverrides, "agent_overrides"),
            maxMachines: req.maxMachines ?? null,
            metadata: req.metadata,
            customKey: req.customKey,
            clientAddress: ctx.values.get(peerAddressKey),
          });
          return create(pb.CreateLicenseResponseSchema, { license: out(license), key });
        },
      ),

    async getLicense(req, ctx) {
      return create(pb.GetLicenseResponseSchema, {
        license: out(await licenses.get(db.em(), readTenant(ctx, req.tenantId), req.id)),
      });
    },

    async listLicenses(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const status = req.status === PbLicenseStatus.UNSPECIFIED ? undefined : statusFromProto(req.status);
      const expireBefore = req.expireBefore ? timestampDate(req.expireBefore) : undefined;
      const filters = {
        productId: req.productId,
        customerId: req.customerId,
        status,
        expireBefore: expireBefore?.getTime(),
      };
      const page = pages.read(req.pageSize, req.pageToken, { list: procedureOf(ctx), tenantId, filters });
      const rows = await reads.run((em) =>
        licenses.list(em, tenantId, page, {
          productId: req.productId,
          customerId: req.customerId,
          status,
          expireBefore,
        }),
      );
      const { items, nextPageToken } = pages.pageOf(rows, page);
      return create(pb.ListLicensesResponseSchema, { licenses: items.map(out), nextPageToken });
    },

    updateLicense: (req, ctx) => {
      const paths = maskPaths(req.updateMask, [
        "expire_time",
        "entitlement_overrides",
        "agent_overrides",
        "max_machines",
        "metadata",
      ]);
      const patch: LicensePatch = {};
      if (paths.has("expire_time")) patch.expiresAt = req.expireTime ? timestampDate(req.expireTime) : null;
      if (paths.has("entitlement_overrides"))
        patch.entitlementOverrides = entitlementsFromProto(req.entitlementOverrides, "entitlement_overrides");
      if (paths.has("agent_overrides")) patch.agentOverrides = agentsFromProto(req.agentOverrides, "agent_overrides");
      if (paths.has("max_machines")) patch.maxMachines = req.maxMachines ?? null;
      if (paths.has("metadata")) patch.metadata = req.metadata;
      return tenantMutation(
        idempotency,
        ctx,
        { requestSchema: pb.UpdateLicenseRequestSchema, request: req, responseSchema: pb.UpdateLicenseResponseSchema },
        async (em, m) =>
          create(pb.UpdateLicenseResponseSchema, {
            license: out(await licenses.update(em, m.tenantId, m.actor, req.id, patch)),
          }),
      );
    },

    deleteLicense: verb(pb.DeleteLicenseRequestSchema, pb.DeleteLicenseResponseSchema, licenses.delete),
    suspendLicense: verb(pb.SuspendLicenseRequestSchema, pb.SuspendLicenseResponseSchema, licenses.suspend),
    reinstateLicense: verb(pb.ReinstateLicenseRequestSchema, pb.ReinstateLicenseResponseSchema, licenses.reinstate),
    renewLicense: verb(pb.RenewLicenseRequestSchema, pb.RenewLicenseResponseSchema, licenses.renew),
    revokeLicense: verb(pb.RevokeLicenseRequestSchema, pb.RevokeLicenseResponseSchema, licenses.revoke),

    transferLicense: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.TransferLicenseRequestSchema,
          request: req,
          responseSchema: pb.TransferLicenseResponseSchema,
        },
        async (em, m) =>
          create(pb.TransferLicenseResponseSchema, {
            license: out(
              await licenses.transfer(em, m.tenantId, m.actor, req.id, {
                customerId: req.customerId,
                policyId: req.policyId,
              }),
            ),
          }),
      ),

    revealLicenseKey: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.RevealLicenseKeyRequestSchema,
          request: { ...req, idempotencyKey: "" },
          responseSchema: pb.RevealLicenseKeyResponseSchema,
        },
        async (em, m) =>
          create(pb.RevealLicenseKeyResponseSchema, { key: await licenses.reveal(em, m.tenantId, m.actor, req.id) }),
      ),

    issueLicenseFile: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.IssueLicenseFileRequestSchema,
          request: { ...req, idempotencyKey: "" },
          responseSchema: pb.IssueLicenseFileResponseSchema,
        },
        async (em, m) => {
          const r = await licenses.issueFile(em, m.tenantId, m.actor, req.licenseId, {
            fingerprint: req.fingerprint,
            encrypt: req.encrypt,
            format: req.format === pb.LicenseFileFormat.HMAC ? "hmac" : "ed25519",
            ttlSeconds: req.ttl ? Number(req.ttl.seconds) : null,
          });
          return create(pb.IssueLicenseFileResponseSchema, {
            licenseFile: r.file,
            kid: r.kid,
            expireTime: r.expiresAt ? timestampFromDate(r.expiresAt) : undefined,
          });
        },
      ),

    async importLicenses(requests, ctx) {
      const messages = requests[Symbol.asyncIterator]();
      const first = await messages.next();
      if (first.done) return create(pb.ImportLicensesResponseSchema, {});
      const principal = ctx.values.get(principalKey);
      const tenantId = requireTenant(principal, first.value.tenantId, "admin");
      await requireLiveTenant(db.em(), principal, tenantId);
      async function* rows(): AsyncGenerator<ImportRow> {
        for (let next = first; !next.done; next = await messages.next()) yield importRowFromProto(next.value);
      }
      const s = await imports.importRows(tenantId, actorOf(principal), rows(), {
        clientAddress: ctx.values.get(peerAddressKey),
      });
      return create(pb.ImportLicensesResponseSchema, {
        received: BigInt(s.received),
        imported: BigInt(s.imported),
        customersCreated: BigInt(s.customersCreated),
        failed: BigInt(s.failed),
        errors: s.errors.map((e) => ({ ...e, index: BigInt(e.index) })),
      });
    },

    async validateLicense(req, ctx) {
      // An address that spent its failure budget is refused before the look-up (a hit must not be told either).
      const address = ctx.values.get(peerAddressKey);
      keyFailures.refuseIfBlocked(address);
      const v = await validation.validate({
        key: req.key,
        productCode: req.productCode,
        fingerprint: req.fingerprint,
        requiredEntitlements: req.entitlements,
        user: req.user,
        components: validatedComponents(req),
      });
      if (v.code === "NOT_FOUND" || v.code === "FORMAT_INVALID" || v.code === "SIGNATURE_INVALID")
        await keyFailures.failed(address);
      const answer = answers.of(req, v);
      const now = clock.now();
      const time = timestampFromDate(now);
      const lease =
        v.valid && req.fingerprint && v.license
          ? ((await machines.leaseToken(v.license.id, req.fingerprint)) ?? "")
          : "";
      // Signed at the end of the turn, with the other answers the turn produced.
      const { kid, signature } = await signingKeys.signLater(answers.signingText(answer, req.nonce, now, lease));
      // A shallow copy: the cached answer's nested messages are shared, never changed.
      return { ...answer.base, nonce: req.nonce, time, lease, kid, signature };
    },

    async getCustomerEntitlements(req, ctx) {
      const held = await licenses.customerEntitlements(db.em(), readTenant(ctx, req.tenantId), req.customerId);
      return create(pb.GetCustomerEntitlementsResponseSchema, {
        customerId: req.customerId,
        licenseIds: held.licenseIds,
        entitlements: held.entitlements.map(composedEntitlementToProto),
        agentEntitlements: held.agents.map(composedAgentToProto),
      });
    },
  };
}
