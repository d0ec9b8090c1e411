/**
 * Every event type a tenant's webhook endpoints can subscribe to: the types written to
 * its audit log, and `webhook.test` (SendTestWebhook's, never in the log). docs/webhooks.md
 * documents each with an example; a test keeps the three (this list, the types the code
 * emits, the docs) the same.
 */
export const EVENT_CATALOG: Readonly<Record<string, string>> = {
  "tenant.created": "The tenant was created.",
  "tenant.updated": "The tenant's name or metadata changed.",
  "tenant.deleted": "The tenant was deleted.",
  "tenant.api_key.created": "An API key was created (its prefix only, never the secret).",
  "tenant.api_key.revoked": "An API key was revoked.",
  "product.created": "A product was created.",
  "product.updated": "A product changed.",
  "product.deleted": "A product was deleted.",
  "policy.created": "A policy was created.",
  "policy.updated": "A policy changed.",
  "policy.deleted": "A policy was deleted.",
  "customer.created": "A customer was created.",
  "customer.updated": "A customer changed.",
  "customer.deleted": "A customer was deleted.",
  "license.created": "A license was issued (its key's prefix only, never the key).",
  "license.updated": "A license's expiry, overrides, seats or metadata changed.",
  "license.suspended": "A license was suspended.",
  "license.reinstated": "A suspended license was reinstated.",
  "license.renewed": "A license's expiry was extended.",
  "license.expiry_started":
    "A license's expiry started, at its first activation, validation or use (its policy's basis).",
  "license.revoked": "A license was revoked, by a caller or by the license worker past its grace.",
  "license.transferred": "A license moved to another customer.",
  "license.deleted": "A license was deleted.",
  "license.key_revealed": "A license's key was shown again to a caller (the key itself is not in the event).",
  "license.file_issued": "A signed license file was issued.",
  "license.user_added": "A user was attached to a license (AddLicenseUser).",
  "license.user_removed": "A user was detached from a license (RemoveLicenseUser).",
  "machine.activated": "A machine was activated on a license.",
  "machine.deactivated": "A machine was deactivated (by a caller, by itself, or culled after its heartbeat died).",
  "machine.deleted": "A machine was deleted.",
  "process.spawned":
    "A process of the app was spawned on a machine (SpawnProcess, or a ConnectLease stream naming one).",
  "process.killed":
    "A process ended: killed (KillProcess, or its ConnectLease stream closed) or removed after missing its heartbeat.",
  "machine.heartbeat.dead": "A machine missed its heartbeat deadline.",
  "machine.heartbeat.resurrected": "A dead machine heartbeated again within its policy's resurrection window.",
  "meter.created": "A usage meter was created.",
  "meter.updated": "A usage meter changed.",
  "meter.deleted": "A usage meter was deleted.",
  "usage.limit_warning": "Usage of a meter crossed its warning threshold in the current period.",
  "usage.limit_exceeded": "Usage of a meter went past its limit in the current period.",
  "anomaly.detected": "Abnormal usage or activation was detected.",
  "anomaly.resolved": "An anomaly was marked resolved.",
  "audit.retention.cut": "Old audit entries were removed under a retention cut.",
  "webhook.endpoint.created": "A webhook endpoint was created.",
  "webhook.endpoint.updated": "A webhook endpoint changed (url, description, event types, enabled).",
  "webhook.endpoint.deleted": "A webhook endpoint was deleted.",
  "webhook.endpoint.secret_rotated": "A webhook endpoint's signing secret was rotated.",
  "webhook.endpoint.disabled": "licensd disabled a webhook endpoint: it answered 410, or failed for 5 days straight.",
  "payment_source.created": "A payment source (a Stripe or Polar webhook endpoint) was connected.",
  "payment_source.updated": "A payment source's description, mappings or enabled flag changed.",
  "payment_source.secret_rotated": "A payment source's signing secret was replaced.",
  "payment_source.deleted": "A payment source was deleted.",
  "payment.event_failed":
    "A verified payment event could not be applied (e.g. an unmapped price); replay it once fixed.",
  "email_template.updated": "The tenant's license-key e-mail template was replaced.",
  "webhook.test": "Sent by SendTestWebhook to one endpoint; not in the audit log.",
};

const FILTER = /^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$/;

/** Whether an endpoint with these filters (empty: all) receives `type`. */
export function matchesFilters(filters: readonly string[], type: string): boolean {
  if (filters.length === 0) return true;
  return filters.some((f) => f === "*" || f === type || (f.endsWith(".*") && type.startsWith(f.slice(0, -1))));
}

/**
 * Why `filter` cannot be used (undefined when it can): it must be `*`, a type of the
 * catalog, or a `prefix.*` that matches at least one of them (so a typo is refused, not
 * silently never matched).
 */
export function filterProblem(filter: string): string | undefined {
  if (!FILTER.test(filter)) return `${JSON.stringify(filter)} is not an event type, "prefix.*" or "*"`;
  if (filter === "*" || filter in EVENT_CATALOG) return undefined;
  if (filter.endsWith(".*") && Object.keys(EVENT_CATALOG).some((t) => t.startsWith(filter.slice(0, -1))))
    return undefined;
  return `${JSON.stringify(filter)} matches no event type (docs/webhooks.md lists them)`;
}
