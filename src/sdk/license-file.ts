// The verifier is the server's own (licensing/license-file-verify.ts); the SDK offers it as is.
export * from "../licensing/license-file-verify.js";
