/*
 * @licensd/client: the generated stubs of licensd's six services, plus the hand-written
 * layer product code needs (client constructor, offline verifiers, gates, LicenseGuard,
 * UsageUploader). Nothing here imports server code.
 */
export { ActivationService } from "../gen/licensd/activation/v1/activation_service_pb.js";
export { AuditService } from "../gen/licensd/audit/v1/audit_service_pb.js";
export { LicensingService } from "../gen/licensd/licensing/v1/licensing_service_pb.js";
export { TenantService } from "../gen/licensd/tenant/v1/tenant_service_pb.js";
export { UsageService } from "../gen/licensd/usage/v1/usage_service_pb.js";
export { WebhookService } from "../gen/licensd/webhook/v1/webhook_service_pb.js";
export {
  createLicensdClient,
  isIdempotentCall,
  isRetryableError,
  type LicensdClient,
  type LicensdClientOptions,
  type Protocol,
  type RetryEvent,
  type RetryOptions,
} from "./client.js";
export { codeName, describeError, type FieldViolation, type LicensdErrorDescription } from "./errors.js";
export { type Gate, gateError, requireFeature, requireLicense } from "./gates/gate.js";
export {
  decide,
  fixedLicense,
  type GateDecision,
  invalidLicense,
  type LicenseInfo,
  type LicenseSource,
  readLicense,
} from "./gates/license-info.js";
export * from "./verify/index.js";
export { licenseFileSource, type LicenseFileSourceOptions } from "./gates/license-file-source.js";
