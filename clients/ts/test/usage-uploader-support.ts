// A vendor set up on a live licensd for the UsageUploader tests, and what they read back: the
// events the server stored, through the API an operator would use.
import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { LicensingService, TenantService, UsageService } from "@licensd/client";
import { ApiKeyScope } from "@licensd/client/gen/licensd/tenant/v1/api_key_pb.js";
import { Aggregation } from "@licensd/client/gen/licensd/usage/v1/usage_pb.js";

/** A Connect (HTTP/1.1, JSON) client sending `key` as its bearer token, as an operator's script would. */
function connectClient<T extends DescService>(service: T, url: string, key: string): Client<T> {
  return createClient(
    service,
    createConnectTransport({
      baseUrl: url,
      httpVersion: "1.1",
      interceptors: [
        (next) => (req) => {
          req.header.set("authorization", `Bearer ${key}`);
          return next(req);
        },
      ],
    }),
  );
}

/** A tenant with an admin and an ingest key, a product with a `tokens` SUM meter, a policy and one license. */
export async function vendor(url: string, superAdminKey: string, code: string) {
  const tenants = connectClient(TenantService, url, superAdminKey);
  const { tenant } = await tenants.createTenant({ name: `${code} vendor` });
  const admin = (await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] }))
    .secret;
  const ingestKey = (
    await tenants.createApiKey({ tenantId: tenant!.id, name: "uploader", scopes: [ApiKeyScope.INGEST] })
  ).secret;
  const licensing = connectClient(LicensingService, url, admin);
  const product = (await licensing.createProduct({ code, name: "Agents" })).product!;
  const usage = connectClient(UsageService, url, admin);
  await usage.createMeter({ productId: product.id, metric: "tokens", aggregation: Aggregation.SUM });
  const policy = (await licensing.createPolicy({ productId: product.id, name: "pro" })).policy!;
  const customer = (await licensing.createCustomer({ name: "Ann", email: `ann@${code.toLowerCase()}.example` }))
    .customer!;
  const license = async () => {
    const created = await licensing.createLicense({ policyId: policy.id, customerId: customer.id });
    return { key: created.key, id: created.license!.id };
  };
  return { admin, ingestKey, licensing, usage, license };
}

/** Every event the server stored for a license (ListUsageEvents, all pages). */
export async function storedEvents(usage: Client<typeof UsageService>, licenseId: string) {
  const out = [];
  let pageToken = "";
  do {
    const page = await usage.listUsageEvents({ licenseId, pageSize: 1000, pageToken });
    out.push(...page.events);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return out;
}

/** How many times each `seq` attribute occurs among `events`. */
export function timesEachSeq(events: { attributes: Record<string, string> }[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const e of events) counts.set(e.attributes.seq!, (counts.get(e.attributes.seq!) ?? 0) + 1);
  return counts;
}
