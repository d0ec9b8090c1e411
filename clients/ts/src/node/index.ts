/*
 * @licensd/client/node: the parts that need Node (files, HTTP/2 gRPC): LicenseGuard,
 * UsageUploader and the plain-Node HTTP gates. Everything in "@licensd/client" itself runs
 * in browsers, Deno, Bun and edge runtimes too.
 */
export { createLicensdClient, type LicensdNodeClientOptions } from "./client.js";
export { type HttpGate, refuse, requireFeature, requireLicense } from "./http-gate.js";
export { LicenseGuard, type LicenseGuardOptions } from "./license-guard.js";
export { SpoolFullError, SpoolLockedError } from "./spool.js";
export {
  InvalidUsageEventError,
  UsageUploader,
  UsageUploaderClosedError,
  type RecordOptions,
  type RejectedUsageEvent,
  type UsageUploaderOptions,
  type UsageUploaderStats,
} from "./usage-uploader.js";
export {
  backoffDelay,
  newEventKey,
  streamBatches,
  UsageStreamError,
  type Backoff,
  type StreamBatchesOptions,
  type UsageBatch,
} from "./usage-stream.js";
