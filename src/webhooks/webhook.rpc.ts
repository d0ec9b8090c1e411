import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import * as pb from "../../gen/ts/licensd/webhook/v1/webhook_service_pb.js";
import type { Database } from "../platform/db.js";
import type { ReplicaReads } from "../platform/replicas.js";
import { invalidArgument } from "../platform/errors.js";
import type { Idempotency } from "../platform/idempotency.js";
import type { PageTokens } from "../platform/pagination.js";
import { procedureOf, readTenant, tenantMutation } from "../platform/rpc.js";
import type { DeliveryQueries } from "./delivery.query.js";
import type { Dispatcher } from "./dispatcher.js";
import type { EndpointPatch, EndpointService } from "./endpoint.service.js";
import { deliveryToProto, endpointToProto, statusFromProto } from "./webhook.mapper.js";

const UPDATABLE = ["url", "description", "event_types", "enabled"];
const DEFAULT_OVERLAP_MS = 24 * 3_600_000;

/** WebhookService's payment-source methods: provisioning/payment.rpc.ts implements them (app.ts joins the two). */
type PaymentMethods =
  | "createPaymentSource"
  | "getPaymentSource"
  | "listPaymentSources"
  | "updatePaymentSource"
  | "rotatePaymentSourceSecret"
  | "deletePaymentSource"
  | "listPaymentEvents"
  | "replayPaymentEvent";

/** The Connect implementation of licensd.webhook.v1.WebhookService's endpoints and deliveries. */
export function createWebhookRpc(deps: {
  db: Database;
  /** Lists and other reads that tolerate bounded staleness (docs/replicas.md). */
  reads: ReplicaReads;
  idempotency: Idempotency;
  endpoints: EndpointService;
  deliveries: DeliveryQueries;
  dispatcher: Dispatcher;
  pages: PageTokens;
}): Omit<ServiceImpl<typeof pb.WebhookService>, PaymentMethods> {
  const { db, reads, idempotency, endpoints, deliveries, dispatcher, pages } = deps;
  return {
    createWebhookEndpoint: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.CreateWebhookEndpointRequestSchema,
          request: req,
          responseSchema: pb.CreateWebhookEndpointResponseSchema,
        },
        async (em, m) => {
          const { endpoint, secret } = await endpoints.create(em, m.tenantId, m.actor, {
            url: req.url,
            description: req.description,
            eventTypes: req.eventTypes,
            enabled: req.enabled ?? true,
          });
          return create(pb.CreateWebhookEndpointResponseSchema, { endpoint: endpointToProto(endpoint), secret });
        },
      ),

    async getWebhookEndpoint(req, ctx) {
      const endpoint = await endpoints.get(db.em(), readTenant(ctx, req.tenantId), req.id);
      return create(pb.GetWebhookEndpointResponseSchema, { endpoint: endpointToProto(endpoint) });
    },

    async listWebhookEndpoints(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const page = pages.read(req.pageSize, req.pageToken, { list: procedureOf(ctx), tenantId });
      const { items, nextPageToken } = pages.pageOf(await reads.run((em) => endpoints.list(em, tenantId, page)), page);
      return create(pb.ListWebhookEndpointsResponseSchema, { endpoints: items.map(endpointToProto), nextPageToken });
    },

    updateWebhookEndpoint(req, ctx) {
      const paths = req.updateMask!.paths;
      if (paths.length === 0) throw invalidArgument("update_mask", `name at least one field: ${UPDATABLE.join(", ")}`);
      const unknown = paths.find((p) => !UPDATABLE.includes(p));
      if (unknown !== undefined)
        throw invalidArgument(
          "update_mask",
          `${JSON.stringify(unknown)} is not updatable (${UPDATABLE.join(", ")} are)`,
        );
      if (paths.includes("url") && req.url === "") throw invalidArgument("url", "a URL is required");
      const patch: EndpointPatch = {};
      if (paths.includes("url")) patch.url = req.url;
      if (paths.includes("description")) patch.description = req.description;
      if (paths.includes("event_types")) patch.eventTypes = req.eventTypes;
      if (paths.includes("enabled")) patch.enabled = req.enabled;
      return tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.UpdateWebhookEndpointRequestSchema,
          request: req,
          responseSchema: pb.UpdateWebhookEndpointResponseSchema,
        },
        async (em, m) => {
          const endpoint = await endpoints.update(em, m.tenantId, m.actor, req.id, patch);
          return create(pb.UpdateWebhookEndpointResponseSchema, { endpoint: endpointToProto(endpoint) });
        },
      );
    },

    deleteWebhookEndpoint: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.DeleteWebhookEndpointRequestSchema,
          request: req,
          responseSchema: pb.DeleteWebhookEndpointResponseSchema,
        },
        async (em, m) => {
          const endpoint = await endpoints.delete(em, m.tenantId, m.actor, req.id);
          return create(pb.DeleteWebhookEndpointResponseSchema, { endpoint: endpointToProto(endpoint) });
        },
      ),

    rotateWebhookSecret: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.RotateWebhookSecretRequestSchema,
          request: req,
          responseSchema: pb.RotateWebhookSecretResponseSchema,
        },
        async (em, m) => {
          const overlapMs = req.overlap
            ? Number(req.overlap.seconds) * 1000 + Math.round(req.overlap.nanos / 1e6)
            : DEFAULT_OVERLAP_MS;
          const { endpoint, secret } = await endpoints.rotateSecret(em, m.tenantId, m.actor, req.id, overlapMs);
          return create(pb.RotateWebhookSecretResponseSchema, { endpoint: endpointToProto(endpoint), secret });
        },
      ),

    async listWebhookDeliveries(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const filters = {
        endpointId: req.endpointId || undefined,
        eventId: req.eventId || undefined,
        status: statusFromProto(req.status),
      };
      const page = pages.read(req.pageSize, req.pageToken, { list: procedureOf(ctx), tenantId, filters });
      const rows = await reads.run((em) => deliveries.list(em, tenantId, page, filters));
      const { items, nextPageToken } = pages.pageOf(rows, page);
      return create(pb.ListWebhookDeliveriesResponseSchema, { deliveries: items.map(deliveryToProto), nextPageToken });
    },

    async getWebhookDelivery(req, ctx) {
      const delivery = await deliveries.get(db.em(), readTenant(ctx, req.tenantId), req.id);
      return create(pb.GetWebhookDeliveryResponseSchema, { delivery: deliveryToProto(delivery) });
    },

    redeliverWebhook: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.RedeliverWebhookRequestSchema,
          request: req,
          responseSchema: pb.RedeliverWebhookResponseSchema,
        },
        async (em, m) => {
          await dispatcher.redeliver(m.tenantId, req.id);
          return create(pb.RedeliverWebhookResponseSchema, {
            delivery: deliveryToProto(await deliveries.get(em, m.tenantId, req.id)),
          });
        },
      ),

    sendTestWebhook: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.SendTestWebhookRequestSchema,
          request: req,
          responseSchema: pb.SendTestWebhookResponseSchema,
        },
        async (em, m) => {
          const id = await dispatcher.sendTest(m.tenantId, m.actor, req.endpointId);
          return create(pb.SendTestWebhookResponseSchema, {
            delivery: deliveryToProto(await deliveries.get(em, m.tenantId, id)),
          });
        },
      ),
  };
}
