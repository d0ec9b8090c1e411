/*
 * What the browser test runs in Chromium: @licensd/client's own entry point (bundled for
 * the browser), against licensd through the page's origin.
 */
import {
  createLicensdClient,
  describeError,
  fixedLicense,
  invalidLicense,
  type Protocol,
  type RetryEvent,
  requireFeature,
} from "@licensd/client";

/** The page's location (the repository's tsconfig has no DOM types). */
declare const location: { origin: string };

async function failure(call: Promise<unknown>) {
  try {
    await call;
  } catch (err) {
    const e = describeError(err);
    return { codeName: e.codeName, reason: e.reason, fields: e.fieldViolations.map((v) => v.field).sort() };
  }
  return null;
}

export async function run(protocol: Protocol, apiKey: string) {
  const c = createLicensdClient({ baseUrl: location.origin, apiKey, protocol });
  const { products } = await c.licensing.listProducts({});
  const wrong = createLicensdClient({ baseUrl: location.origin, apiKey: "lsk_not_a_key", protocol });
  // Under /dead the page's server drops the connection: fetch fails, as when licensd is unreachable.
  const retries: RetryEvent[] = [];
  const dead = createLicensdClient({
    baseUrl: `${location.origin}/dead`,
    apiKey,
    protocol,
    retry: { maxAttempts: 3, initialMs: 1, maxMs: 5 },
    onRetry: (e) => retries.push(e),
  });
  return {
    products: products.map((p) => p.code),
    bad: await failure(c.licensing.createProduct({ code: "x", name: "" })),
    wrong: await failure(wrong.licensing.listProducts({})),
    dead: await failure(dead.licensing.listProducts({})),
    retries: retries.map((r) => r.attempt),
    gate: requireFeature(fixedLicense(invalidLicense("NO_LEASE")), "reports").check().allowed,
  };
}
