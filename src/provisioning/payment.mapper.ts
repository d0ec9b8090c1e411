import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  EmailDeliverySchema,
  EmailDeliveryStatus,
  PaymentEventSchema,
  PaymentEventStatus,
  PaymentProvider,
  PaymentSourceSchema,
} from "../../gen/ts/licensd/webhook/v1/payment_source_pb.js";
import type { EmailDelivery, EmailStatus } from "./email-outbox.js";
import type { PaymentProvider as Provider } from "./payment-events.js";
import { hookPath, type PaymentSource } from "./payment-source.service.js";
import type { PaymentEventStatus as Status, RecordedPaymentEvent } from "./provisioning.service.js";

const time = (d: Date | null) => (d ? timestampFromDate(d) : undefined);

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
    mappings: s.mappings.map((m) => ({
      item: m.item,
      policyId: m.policyId,
      metadata: m.metadata,
      attachLicenseFile: m.attachLicenseFile,
    })),
    enabled: s.enabled,
    emailLicenseKeys: s.emailLicenseKeys,
    hookPath: hookPath(s),
    previousSecretExpireTime: time(s.previousSecretExpiresAt),
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

const EMAIL_STATUS: Record<EmailStatus, EmailDeliveryStatus> = {
  pending: EmailDeliveryStatus.PENDING,
  sent: EmailDeliveryStatus.SENT,
  failed: EmailDeliveryStatus.FAILED,
};

export const emailStatusFromProto = (s: EmailDeliveryStatus): EmailStatus | undefined =>
  (Object.entries(EMAIL_STATUS) as [EmailStatus, EmailDeliveryStatus][]).find(([, v]) => v === s)?.[0];

export const emailDeliveryToProto = (d: EmailDelivery) =>
  create(EmailDeliverySchema, {
    id: d.id,
    tenantId: d.tenantId,
    licenseId: d.licenseId,
    paymentEventId: d.paymentEventId ?? "",
    toAddress: d.toAddress,
    status: EMAIL_STATUS[d.status],
    attempts: d.attempts,
    nextAttemptTime: d.status === "pending" ? time(d.nextAttemptAt) : undefined,
    lastError: d.lastError,
    sendTime: time(d.sentAt),
    createTime: timestampFromDate(d.createdAt),
    updateTime: timestampFromDate(d.updatedAt),
  });
