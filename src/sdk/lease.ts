// The verifier is the server's own (licensing/lease-verify.ts): usage events may carry a lease.
export * from "../licensing/lease-verify.js";
