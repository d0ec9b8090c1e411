import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import * as pb from "../../gen/ts/licensd/webhook/v1/webhook_service_pb.js";
import type { Database } from "../platform/db.js";
import { invalidArgument } from "../platform/errors.js";
import type { Idempotency } from "../platform/idempotency.js";
import type { PageTokens } from "../platform/pagination.js";
import type { ReplicaReads } from "../platform/replicas.js";
import { procedureOf, readTenant, tenantMutation } from "../platform/rpc.js";
import { DEFAULT_TEMPLATE, type EmailOutbox, type EmailTemplate, unknownPlaceholder } from "./email-outbox.js";
import {
  emailDeliveryToProto,
  emailStatusFromProto,
  eventStatusFromProto,
  paymentEventToProto,
  paymentSourceToProto,
  providerFromProto,
} from "./payment.mapper.js";
import type { PaymentMapping, PaymentSourcePatch, PaymentSourceService } from "./payment-source.service.js";
import type { ProvisioningService } from "./provisioning.service.js";

const UPDATABLE = ["description", "mappings", "enabled", "email_license_keys"];
const DEFAULT_OVERLAP_MS = 24 * 3_600_000;

type PaymentMethods =
  | "createPaymentSource"
  | "getPaymentSource"
  | "listPaymentSources"
  | "updatePaymentSource"
  | "rotatePaymentSourceSecret"
  | "deletePaymentSource"
  | "listPaymentEvents"
  | "replayPaymentEvent"
  | "listEmailDeliveries"
  | "getEmailTemplate"
  | "updateEmailTemplate";

const mappingsOf = (
  mappings: { item: string; policyId: string; metadata: Record<string, string>; attachLicenseFile: boolean }[],
) =>
  mappings.map(
    (m): PaymentMapping => ({
      item: m.item,
      policyId: m.policyId,
      metadata: { ...m.metadata },
      attachLicenseFile: m.attachLicenseFile,
    }),
  );

/** WebhookService's payment-source methods (the rest are webhooks/webhook.rpc.ts's; app.ts joins them). */
export function createPaymentRpc(deps: {
  db: Database;
  reads: ReplicaReads;
  idempotency: Idempotency;
  sources: PaymentSourceService;
  provisioning: ProvisioningService;
  outbox: EmailOutbox;
  pages: PageTokens;
}): Pick<ServiceImpl<typeof pb.WebhookService>, PaymentMethods> {
  const { db, reads, idempotency, sources, provisioning, outbox, pages } = deps;
  return {
    createPaymentSource: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.CreatePaymentSourceRequestSchema,
          request: req,
          responseSchema: pb.CreatePaymentSourceResponseSchema,
        },
        async (em, m) => {
          const source = await sources.create(em, m.tenantId, m.actor, {
            provider: providerFromProto(req.provider),
            secret: req.secret,
            description: req.description,
            mappings: mappingsOf(req.mappings),
            enabled: req.enabled ?? true,
            emailLicenseKeys: req.emailLicenseKeys ?? true,
          });
          return create(pb.CreatePaymentSourceResponseSchema, { source: paymentSourceToProto(source) });
        },
      ),

    async getPaymentSource(req, ctx) {
      const source = await sources.get(db.em(), readTenant(ctx, req.tenantId), req.id);
      return create(pb.GetPaymentSourceResponseSchema, { source: paymentSourceToProto(source) });
    },

    async listPaymentSources(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const page = pages.read(req.pageSize, req.pageToken, { list: procedureOf(ctx), tenantId });
      const { items, nextPageToken } = pages.pageOf(await reads.run((em) => sources.list(em, tenantId, page)), page);
      return create(pb.ListPaymentSourcesResponseSchema, { sources: items.map(paymentSourceToProto), nextPageToken });
    },

    updatePaymentSource(req, ctx) {
      const paths = req.updateMask!.paths;
      if (paths.length === 0) throw invalidArgument("update_mask", `name at least one field: ${UPDATABLE.join(", ")}`);
      const unknown = paths.find((p) => !UPDATABLE.includes(p));
      if (unknown !== undefined)
        throw invalidArgument(
          "update_mask",
          `${JSON.stringify(unknown)} is not updatable (${UPDATABLE.join(", ")} are)`,
        );
      const patch: PaymentSourcePatch = {};
      if (paths.includes("description")) patch.description = req.description;
      if (paths.includes("mappings")) patch.mappings = mappingsOf(req.mappings);
      if (paths.includes("enabled")) patch.enabled = req.enabled;
      if (paths.includes("email_license_keys")) patch.emailLicenseKeys = req.emailLicenseKeys;
      return tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.UpdatePaymentSourceRequestSchema,
          request: req,
          responseSchema: pb.UpdatePaymentSourceResponseSchema,
        },
        async (em, m) => {
          const source = await sources.update(em, m.tenantId, m.actor, req.id, patch);
          return create(pb.UpdatePaymentSourceResponseSchema, { source: paymentSourceToProto(source) });
        },
      );
    },

    rotatePaymentSourceSecret: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.RotatePaymentSourceSecretRequestSchema,
          request: req,
          responseSchema: pb.RotatePaymentSourceSecretResponseSchema,
        },
        async (em, m) => {
          const overlapMs = req.overlap
            ? Number(req.overlap.seconds) * 1000 + Math.round(req.overlap.nanos / 1e6)
            : DEFAULT_OVERLAP_MS;
          const source = await sources.rotateSecret(em, m.tenantId, m.actor, req.id, req.secret, overlapMs);
          return create(pb.RotatePaymentSourceSecretResponseSchema, { source: paymentSourceToProto(source) });
        },
      ),

    deletePaymentSource: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.DeletePaymentSourceRequestSchema,
          request: req,
          responseSchema: pb.DeletePaymentSourceResponseSchema,
        },
        async (em, m) => {
          const source = await sources.delete(em, m.tenantId, m.actor, req.id);
          return create(pb.DeletePaymentSourceResponseSchema, { source: paymentSourceToProto(source) });
        },
      ),

    async listPaymentEvents(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const filters = { sourceId: req.sourceId, status: eventStatusFromProto(req.status) };
      const page = pages.read(req.pageSize, req.pageToken, { list: procedureOf(ctx), tenantId, filters });
      const { items, nextPageToken } = pages.pageOf(
        await reads.run((em) => provisioning.listEvents(em, tenantId, page, filters)),
        page,
      );
      return create(pb.ListPaymentEventsResponseSchema, { events: items.map(paymentEventToProto), nextPageToken });
    },

    replayPaymentEvent: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.ReplayPaymentEventRequestSchema,
          request: req,
          responseSchema: pb.ReplayPaymentEventResponseSchema,
        },
        async (em, m) => {
          const event = await provisioning.replay(em, m.tenantId, req.id);
          return create(pb.ReplayPaymentEventResponseSchema, { event: paymentEventToProto(event) });
        },
      ),

    async listEmailDeliveries(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const filters = { licenseId: req.licenseId, status: emailStatusFromProto(req.status) };
      const page = pages.read(req.pageSize, req.pageToken, { list: procedureOf(ctx), tenantId, filters });
      const { items, nextPageToken } = pages.pageOf(
        await reads.run((em) => outbox.list(em, tenantId, page, filters)),
        page,
      );
      return create(pb.ListEmailDeliveriesResponseSchema, {
        deliveries: items.map(emailDeliveryToProto),
        nextPageToken,
      });
    },

    async getEmailTemplate(req, ctx) {
      const template = await outbox.template(db.em(), readTenant(ctx, req.tenantId));
      return create(pb.GetEmailTemplateResponseSchema, { template, default: template === DEFAULT_TEMPLATE });
    },

    updateEmailTemplate(req, ctx) {
      const template: EmailTemplate = {
        subject: req.template!.subject,
        text: req.template!.text,
        html: req.template!.html,
      };
      for (const part of ["subject", "text", "html"] as const) {
        const unknown = unknownPlaceholder(template[part]);
        if (unknown !== undefined)
          throw invalidArgument(
            `template.${part}`,
            `{{${unknown}}} is not a placeholder (docs/provisioning.md lists them)`,
            "UNKNOWN_PLACEHOLDER",
          );
        if (/[\0]/.test(template[part])) throw invalidArgument(`template.${part}`, "holds a NUL character");
      }
      for (const part of ["text", "html"] as const)
        if (!/\{\{\s*license_key\s*\}\}/.test(template[part]))
          throw invalidArgument(`template.${part}`, "must hold {{license_key}}", "LICENSE_KEY_MISSING");
      return tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.UpdateEmailTemplateRequestSchema,
          request: req,
          responseSchema: pb.UpdateEmailTemplateResponseSchema,
        },
        async (em, m) => {
          await outbox.setTemplate(em, m.tenantId, m.actor, template);
          return create(pb.UpdateEmailTemplateResponseSchema, { template });
        },
      );
    },
  };
}
