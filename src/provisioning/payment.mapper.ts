import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  PaymentEventSchema,
  PaymentEventStatus,
  PaymentProvider,
  PaymentSourceSchema,
} from "../../gen/ts/licensd/webhook/v1/payment_source_pb.js";
import type { PaymentProvider as Provider } from "./payment-events.js";
import { hookPath, type PaymentSource } from "./payment-source.service.js";
import type { PaymentEventStatus as Status, RecordedPaymentEvent } from "./provisioning.service.js";

const PROVIDER: Record<Provider, PaymentProvider> = {
  stripe: PaymentProvider.STRIPE,
  polar: PaymentProvider.POLAR,
};

const STATUS: Record<Status, PaymentEventStatus> = {
  applied: PaymentEventStatus.APPLIED,
  ignored: PaymentEventStatus.IGNORED,
  failed: PaymentEventStatus.FAILED,
};

export const providerFromProto = (p: PaymentProvider): Provider =>
  (Object.entries(PROVIDER) as [Provider, PaymentProvider][]).find(([, v]) => v === p)![0];

export const eventStatusFromProto = (s: PaymentEventStatus): Status | undefined =>
  (Object.entries(STATUS) as [Status, PaymentEventStatus][]).find(([, v]) => v === s)?.[0];

export const paymentSourceToProto = (s: PaymentSource) =>
  create(PaymentSourceSchema, {
    id: s.id,
    tenantId: s.tenantId,
    provider: PROVIDER[s.provider],
    description: s.description,
    mappings: s.mappings.map((m) => ({ item: m.item, policyId: m.policyId, metadata: m.metadata })),
    enabled: s.enabled,
    hookPath: hookPath(s),
    previousSecretExpireTime: s.previousSecretExpiresAt ? timestampFromDate(s.previousSecretExpiresAt) : undefined,
    createTime: timestampFromDate(s.createdAt),
    updateTime: timestampFromDate(s.updatedAt),
  });

export const paymentEventToProto = (e: RecordedPaymentEvent) =>
  create(PaymentEventSchema, {
    id: e.id,
    tenantId: e.tenantId,
    sourceId: e.sourceId,
    providerEventId: e.providerEventId,
    type: e.type,
    action: e.action.kind,
    status: STATUS[e.status],
    reason: e.reason,
    licenseIds: e.licenseIds,
    attempts: e.attempts,
    occurTime: timestampFromDate(e.occurredAt),
    receiveTime: timestampFromDate(e.receivedAt),
    updateTime: timestampFromDate(e.updatedAt),
  });
