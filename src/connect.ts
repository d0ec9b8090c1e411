import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import type { DescFile, DescMethod, DescService } from "@bufbuild/protobuf";
import {
  ActivationService,
  type ConnectLeaseRequestSchema,
  type ConnectLeaseResponseSchema,
} from "../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService } from "../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { TenantService } from "../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { UsageService } from "../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { WebhookService } from "../gen/ts/licensd/webhook/v1/webhook_service_pb.js";
import { Health } from "../gen/ts/health/v1/health_pb.js";
import { ServerReflection as ReflectionV1 } from "../gen/ts/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ReflectionV1alpha } from "../gen/ts/grpc/reflection/v1alpha/reflection_pb.js";
import { file_google_rpc_error_details } from "../gen/ts/google/rpc/error_details_pb.js";
import { file_google_rpc_status } from "../gen/ts/google/rpc/status_pb.js";
import { leaseStream } from "./activation/activation.rpc.js";
import type { LeaseSessions } from "./activation/lease-session.js";
import { createLeanStream, type LeanStreamOptions } from "./platform/lean-stream.js";
import { createRequestCheck } from "./platform/validation.js";

/** licensd's own services, in the order they are documented. */
export const licensdServices: DescService[] = [
  TenantService,
  LicensingService,
  ActivationService,
  UsageService,
  AuditService,
  WebhookService,
];

/** Every service served, licensd's and the operator ones (health, reflection). */
export const servedServices: DescService[] = [...licensdServices, Health, ReflectionV1, ReflectionV1alpha];

/**
 * Files reflection serves beside the services' own: what a client needs to decode the
 * answers licensd sends: the google.rpc.Status of gRPC errors and its details (ErrorInfo,
 * BadRequest), so clients resolving types through reflection (grpcurl) decode them.
 */
export const reflectedFiles: DescFile[] = [file_google_rpc_status, file_google_rpc_error_details];

/**
 * Reads whose Connect GET answers any cache may keep, with max-age in seconds: public,
 * the same for every caller. The signing keys: a minute, the time every instance takes
 * to load a rotated key anyway. Every other GET answer is `no-store`.
 */
export const publicReads: ReadonlyMap<DescMethod, number> = new Map([[ActivationService.method.getSigningKeys, 60]]);

export interface ServiceImpls {
  tenant: ServiceImpl<typeof TenantService>;
  activation: ServiceImpl<typeof ActivationService>;
  licensing: ServiceImpl<typeof LicensingService>;
  audit: ServiceImpl<typeof AuditService>;
  health: ServiceImpl<typeof Health>;
  usage: ServiceImpl<typeof UsageService>;
  webhook: ServiceImpl<typeof WebhookService>;
  reflectionV1: ServiceImpl<typeof ReflectionV1>;
  reflectionV1alpha: ServiceImpl<typeof ReflectionV1alpha>;
}

/** The routes: the list of services, nothing else. */
export function routes(impl: ServiceImpls) {
  return (router: ConnectRouter) => {
    router.service(TenantService, impl.tenant);
    router.service(LicensingService, impl.licensing);
    router.service(ActivationService, impl.activation);
    router.service(UsageService, impl.usage);
    router.service(AuditService, impl.audit);
    router.service(WebhookService, impl.webhook);
    router.service(Health, impl.health);
    router.service(ReflectionV1, impl.reflectionV1);
    router.service(ReflectionV1alpha, impl.reflectionV1alpha);
  };
}

/**
 * The streams agents hold open for days, by the thousand: their gRPC streams are served by callbacks
 * (platform/lean-stream.ts) to stay small; every other protocol takes the routes above.
 */
export function leanStreams(
  leases: LeaseSessions,
  opts: Omit<
    LeanStreamOptions<typeof ConnectLeaseRequestSchema, typeof ConnectLeaseResponseSchema>,
    "method" | "open" | "check"
  >,
) {
  return [
    createLeanStream({
      ...opts,
      method: ActivationService.method.connectLease,
      open: leaseStream(leases),
      check: createRequestCheck(),
    }),
  ];
}
