import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  WebhookAttemptSchema,
  WebhookDeliverySchema,
  WebhookDeliveryStatus,
  WebhookEndpointDisabledReason,
  WebhookEndpointSchema,
} from "../../gen/ts/licensd/webhook/v1/webhook_pb.js";
import type { DeliveryStatus, WebhookDelivery } from "./dispatcher.js";
import type { DisabledReason, WebhookEndpoint } from "./endpoint.service.js";

const REASON: Record<DisabledReason, WebhookEndpointDisabledReason> = {
  manual: WebhookEndpointDisabledReason.MANUAL,
  gone: WebhookEndpointDisabledReason.GONE,
  failing: WebhookEndpointDisabledReason.FAILING,
};

const STATUS: Record<DeliveryStatus, WebhookDeliveryStatus> = {
  pending: WebhookDeliveryStatus.PENDING,
  succeeded: WebhookDeliveryStatus.SUCCEEDED,
  failed: WebhookDeliveryStatus.FAILED,
};

export function statusFromProto(s: WebhookDeliveryStatus): DeliveryStatus | undefined {
  return (Object.entries(STATUS) as [DeliveryStatus, WebhookDeliveryStatus][]).find(([, v]) => v === s)?.[0];
}

const time = (d: Date | null) => (d ? timestampFromDate(d) : undefined);

export const endpointToProto = (e: WebhookEndpoint) =>
  create(WebhookEndpointSchema, {
    id: e.id,
    tenantId: e.tenantId,
    url: e.url,
    description: e.description,
    eventTypes: e.eventTypes,
    enabled: e.enabled,
    disabledReason: e.disabledReason ? REASON[e.disabledReason] : WebhookEndpointDisabledReason.UNSPECIFIED,
    failingSince: time(e.failingSince),
    previousSecretExpireTime: time(e.previousSecretExpiresAt),
    createTime: timestampFromDate(e.createdAt),
    updateTime: timestampFromDate(e.updatedAt),
  });

export const deliveryToProto = (d: WebhookDelivery) =>
  create(WebhookDeliverySchema, {
    id: d.id,
    tenantId: d.tenantId,
    endpointId: d.endpointId,
    eventId: d.eventId,
    eventType: d.eventType,
    status: STATUS[d.status],
    attemptCount: d.attemptCount,
    nextAttemptTime: time(d.nextAttemptAt),
    payload: d.payload,
    attempts: d.attempts.map((a) =>
      create(WebhookAttemptSchema, {
        number: a.number,
        startTime: timestampFromDate(a.startedAt),
        httpStatus: a.httpStatus,
        latency: durationFromMs(a.latencyMs),
        responseBody: a.responseBody,
        error: a.error,
        errorReason: a.errorReason,
        manual: a.manual,
      }),
    ),
    createTime: timestampFromDate(d.createdAt),
    updateTime: timestampFromDate(d.updatedAt),
  });
