/*
 * Offline verifiers: pure TypeScript over WebCrypto and @noble, no Node APIs, so they run
 * in browsers, Deno, Bun, edge runtimes and Node ≥ 20. Everything that checks an Ed25519
 * signature is async (WebCrypto is); the promises never reject for bad input, they resolve
 * with a result and a code.
 */
export {
  auditEntryHash,
  type AuditProofCode,
  type AuditProofInput,
  type AuditProofResult,
  type CheckpointFields,
  checkpointText,
  readCheckpoint,
  verifyAuditProof,
  verifyCheckpoint,
} from "./audit.js";
export { type Ed25519Backend, ed25519Backend, verifyEd25519 } from "./ed25519.js";
export type { KeySource, Keys, PublicKey } from "./keys.js";
export { type LeaseCheck, type LeasePayload, type VerifyLeaseOptions, verifyLease } from "./lease.js";
export { normalizeLicenseKey } from "./license-key.js";
export {
  type Entitlement,
  type LicenseFileCode,
  type LicenseFilePayload,
  type LicenseFileResult,
  type VerifyLicenseFileOptions,
  verifyLicenseFile,
} from "./license-file.js";
export { EMPTY_ROOT, leafHash, nodeHash, verifyConsistency, verifyInclusion } from "./merkle.js";
export {
  checkOfflineActivationRequest,
  type CreateOfflineActivationRequestOptions,
  createOfflineActivationRequest,
  licenseKeyDigest,
  type OfflineActivationRequest,
  type ParsedOfflineActivationRequest,
  parseOfflineActivationRequest,
  verifyOfflineActivationResponse,
} from "./offline-activation.js";
export {
  type PublishedKey,
  SigningKeys,
  type SigningKeysOptions,
  SigningKeysUnavailableError,
} from "./signing-keys.js";
export {
  type ValidationResponseCode,
  type ValidationResponseResult,
  type ValidationScopeExpectation,
  type VerifyValidationResponseOptions,
  validationSigningBytes,
  verifyValidationResponse,
} from "./validation.js";
export {
  type VerifyWebhookOptions,
  verifyWebhook,
  WEBHOOK_TOLERANCE_SECONDS,
  type WebhookFailure,
  type WebhookHeaders,
  type WebhookVerification,
  webhookSecretKey,
  webhookSignature,
} from "./webhook.js";
