import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { connectClient, grpcClient, startTestApp, type TestApp } from "../support/app.js";
import { failure } from "../support/errors.js";

// ListProducts, ListPolicies, DeletePolicy and UpdateCustomer: happy paths, paging, bad
// input, other tenants' ids, scopes.
let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => t?.close());

const features = [{ name: "reports", kind: FeatureKind.FLAG, compose: ComposeStrategy.UNION }];

/** A tenant with an admin key, a read-only key and an ingest key. */
async function vendor(name: string) {
  const tenants = connectClient(TenantService, t.url, t.superAdminKey);
  const { tenant } = await tenants.createTenant({ name });
  const key = async (scope: ApiKeyScope) =>
    (await tenants.createApiKey({ tenantId: tenant!.id, name: `k${scope}`, scopes: [scope] })).secret;
  const [admin, read, ingest] = [
    await key(ApiKeyScope.ADMIN),
    await key(ApiKeyScope.READ),
    await key(ApiKeyScope.INGEST),
  ];
  return {
    tenantId: tenant!.id,
    secrets: { admin, read, ingest },
    admin: connectClient(LicensingService, t.url, admin),
    read: connectClient(LicensingService, t.url, read),
    ingest: connectClient(LicensingService, t.url, ingest),
    audit: connectClient(AuditService, t.url, admin),
  };
}
type Vendor = Awaited<ReturnType<typeof vendor>>;

const anonymous = () => connectClient(LicensingService, t.url);
const superAdmin = () => connectClient(LicensingService, t.url, t.superAdminKey);

/** Every page of a list, following next_page_token; checks that only the last page is short. */
async function allPages<T>(
  fetchPage: (pageToken: string) => Promise<{ items: T[]; nextPageToken: string }>,
  pageSize: number,
): Promise<T[][]> {
  const pages: T[][] = [];
  let token = "";
  do {
    const page = await fetchPage(token);
    pages.push(page.items);
    if (page.nextPageToken !== "") expect(page.items).toHaveLength(pageSize);
    token = page.nextPageToken;
  } while (token !== "" && pages.length < 100);
  return pages;
}

describe("ListProducts", () => {
  let v: Vendor;
  let ids: string[];
  beforeAll(async () => {
    v = await vendor("Products Co");
    ids = [];
    for (const code of ["LPA", "LPB", "LPC", "LPD", "LPE"])
      ids.push((await v.admin.createProduct({ code, name: `Product ${code}`, features })).product!.id);
  });

  it("lists the tenant's products oldest first, in pages that together hold each exactly once", async () => {
    const all = await v.admin.listProducts({});
    expect(all.products.map((p) => p.id)).toEqual(ids);
    expect(all.products[0]).toMatchObject({
      code: "LPA",
      name: "Product LPA",
      tenantId: v.tenantId,
      features: [{ name: "reports" }],
    });
    expect(all.nextPageToken).toBe("");

    const pages = await allPages(async (pageToken) => {
      const r = await v.admin.listProducts({ pageSize: 2, pageToken });
      return { items: r.products.map((p) => p.id), nextPageToken: r.nextPageToken };
    }, 2);
    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    expect(pages.flat()).toEqual(ids);
    // A page size of exactly the count ends without a further (empty) page.
    expect((await v.admin.listProducts({ pageSize: 5 })).nextPageToken).toBe("");
  });

  it("answers read keys and the super-admin naming the tenant, and over gRPC too", async () => {
    expect((await v.read.listProducts({})).products.map((p) => p.id)).toEqual(ids);
    expect((await superAdmin().listProducts({ tenantId: v.tenantId })).products.map((p) => p.id)).toEqual(ids);
    expect((await v.read.listProducts({ tenantId: v.tenantId })).products).toHaveLength(5);
    expect(
      (await grpcClient(LicensingService, t.url, v.secrets.read).listProducts({ pageSize: 1 })).products.map(
        (p) => p.id,
      ),
    ).toEqual([ids[0]]);
  });

  it("shows no other tenant's products and refuses another tenant's id with NOT_FOUND", async () => {
    const other = await vendor("Other Products Co");
    const theirs = (await other.admin.createProduct({ code: "LPA", name: "Theirs", features })).product!;
    expect((await other.admin.listProducts({})).products.map((p) => p.id)).toEqual([theirs.id]);
    expect((await v.admin.listProducts({})).products.map((p) => p.id)).not.toContain(theirs.id);
    expect(await failure(other.admin.listProducts({ tenantId: v.tenantId }))).toMatchObject({ code: "NotFound" });
    // A page token from one tenant's list is no way into another's.
    const token = (await v.admin.listProducts({ pageSize: 1 })).nextPageToken;
    expect(await failure(other.admin.listProducts({ pageSize: 1, pageToken: token }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "page_token" },
    });
  });

  it("refuses missing keys, keys without the read scope and bad paging with the field named", async () => {
    expect(await failure(anonymous().listProducts({}))).toMatchObject({ code: "Unauthenticated" });
    expect(await failure(v.ingest.listProducts({}))).toMatchObject({
      code: "PermissionDenied",
      reason: "SCOPE_REQUIRED",
    });
    expect(await failure(superAdmin().listProducts({}))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "tenant_id" },
    });
    expect(await failure(v.admin.listProducts({ pageSize: 1001 }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "page_size" },
    });
    expect(await failure(v.admin.listProducts({ pageSize: -1 }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "page_size" },
    });
    expect(await failure(v.admin.listProducts({ pageToken: "not-a-token" }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "page_token" },
    });
    expect(await failure(v.admin.listProducts({ tenantId: "ten_x" }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "tenant_id" },
    });
    // A token of another list (ListPolicies') is not one of this list's.
    await v.admin.createPolicy({ productId: ids[0], name: "p1" });
    await v.admin.createPolicy({ productId: ids[0], name: "p2" });
    const token = (await v.admin.listPolicies({ pageSize: 1 })).nextPageToken;
    expect(token).not.toBe("");
    expect(await failure(v.admin.listProducts({ pageSize: 1, pageToken: token }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "page_token" },
    });
  });
});

describe("ListPolicies", () => {
  it("lists every policy or one product's, in pages, with the filter bound to the page token", async () => {
    const v = await vendor("Policies Co");
    const a = (await v.admin.createProduct({ code: "LPA", name: "A", features })).product!;
    const b = (await v.admin.createProduct({ code: "LPB", name: "B", features })).product!;
    const ofA: string[] = [];
    const ofB: string[] = [];
    for (let i = 0; i < 5; i++) {
      ofA.push(
        (await v.admin.createPolicy({ productId: a.id, name: `a${i}`, floating: true, maxMachines: 2 + i })).policy!.id,
      );
      ofB.push((await v.admin.createPolicy({ productId: b.id, name: `b${i}` })).policy!.id);
    }
    const everything = (await v.admin.listPolicies({})).policies;
    expect(everything.map((p) => p.id).sort()).toEqual([...ofA, ...ofB].sort());
    expect(everything.find((p) => p.id === ofA[3])).toMatchObject({
      name: "a3",
      productId: a.id,
      floating: true,
      maxMachines: 5,
    });

    const pages = await allPages(async (pageToken) => {
      const r = await v.read.listPolicies({ productId: a.id, pageSize: 2, pageToken });
      return { items: r.policies.map((p) => p.id), nextPageToken: r.nextPageToken };
    }, 2);
    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    expect(pages.flat()).toEqual(ofA);
    expect((await v.admin.listPolicies({ productId: b.id, pageSize: 1000 })).policies.map((p) => p.id)).toEqual(ofB);

    // A token made under one filter is refused under another.
    const token = (await v.admin.listPolicies({ productId: a.id, pageSize: 2 })).nextPageToken;
    expect(await failure(v.admin.listPolicies({ productId: b.id, pageSize: 2, pageToken: token }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "page_token" },
    });
    expect(await failure(v.admin.listPolicies({ pageSize: 2, pageToken: token }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "page_token" },
    });
  });

  it("never shows another tenant's policies: their product filter finds nothing, their tenant id is NOT_FOUND", async () => {
    const v = await vendor("Policies Mine");
    const other = await vendor("Policies Theirs");
    const theirProduct = (await other.admin.createProduct({ code: "THR", name: "T", features })).product!;
    const theirPolicy = (await other.admin.createPolicy({ productId: theirProduct.id, name: "secret-plan" })).policy!;
    const mine = (await v.admin.createProduct({ code: "MNE", name: "M", features })).product!;
    await v.admin.createPolicy({ productId: mine.id, name: "mine" });
    expect((await v.admin.listPolicies({})).policies.map((p) => p.name)).toEqual(["mine"]);
    // The same answer as for a product that does not exist at all.
    expect((await v.admin.listPolicies({ productId: theirProduct.id })).policies).toEqual([]);
    expect((await v.admin.listPolicies({ productId: "prod_00000000000000000000000000" })).policies).toEqual([]);
    expect(await failure(v.admin.listPolicies({ tenantId: other.tenantId }))).toMatchObject({ code: "NotFound" });
    expect((await superAdmin().listPolicies({ tenantId: other.tenantId })).policies.map((p) => p.id)).toEqual([
      theirPolicy.id,
    ]);
  });

  it("refuses missing keys, keys without the read scope and bad input with the field named", async () => {
    const v = await vendor("Policies Bad Input");
    expect(await failure(anonymous().listPolicies({}))).toMatchObject({ code: "Unauthenticated" });
    expect(await failure(v.ingest.listPolicies({}))).toMatchObject({
      code: "PermissionDenied",
      reason: "SCOPE_REQUIRED",
    });
    expect(await failure(v.admin.listPolicies({ productId: "pol_00000000000000000000000000" }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "product_id" },
    });
    expect(await failure(v.admin.listPolicies({ pageSize: 5000 }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "page_size" },
    });
    expect(await failure(v.admin.listPolicies({ pageToken: "x".repeat(513) }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "page_token" },
    });
    expect(
      await failure(v.admin.listPolicies({ pageToken: Buffer.from('{"a":1}').toString("base64url") })),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "page_token" } });
  });
});

describe("DeletePolicy", () => {
  async function withPolicy(name: string) {
    const v = await vendor(name);
    const product = (await v.admin.createProduct({ code: "DEL", name: "D", features })).product!;
    const policy = (
      await v.admin.createPolicy({
        productId: product.id,
        name: "doomed",
        entitlements: [{ feature: "reports", value: { case: "enabled", value: true } }],
      })
    ).policy!;
    return { v, product, policy };
  }

  it("deletes an unused policy, answers it as it was, audits it and frees its name", async () => {
    const { v, product, policy } = await withPolicy("Delete Policy Co");
    const deleted = await v.admin.deletePolicy({ id: policy.id });
    expect(deleted.policy).toMatchObject({
      id: policy.id,
      name: "doomed",
      productId: product.id,
      entitlements: [{ feature: "reports" }],
    });
    expect(await failure(v.admin.getPolicy({ id: policy.id }))).toMatchObject({
      code: "NotFound",
      reason: "POLICY_NOT_FOUND",
    });
    expect((await v.admin.listPolicies({ productId: product.id })).policies).toEqual([]);
    const events = (await v.audit.listAuditEvents({ subject: policy.id })).events.map((e) => e.type);
    expect(events).toEqual(expect.arrayContaining(["policy.created", "policy.deleted"]));
    // Deleted a second time: not found, and the name can be used again.
    expect(await failure(v.admin.deletePolicy({ id: policy.id }))).toMatchObject({
      code: "NotFound",
      reason: "POLICY_NOT_FOUND",
    });
    expect((await v.admin.createPolicy({ productId: product.id, name: "doomed" })).policy!.id).not.toBe(policy.id);
  });

  it("is safe to retry with an idempotency key: the retry answers the first result", async () => {
    const { v, policy } = await withPolicy("Delete Retry Co");
    const first = await v.admin.deletePolicy({ id: policy.id, idempotencyKey: "del-1" });
    const retry = await v.admin.deletePolicy({ id: policy.id, idempotencyKey: "del-1" });
    expect(retry).toEqual(first);
    expect((await v.audit.listAuditEvents({ subject: policy.id, typePrefix: "policy.deleted" })).events).toHaveLength(
      1,
    );
  });

  it("refuses a policy that licenses use, keeping it", async () => {
    const { v, policy } = await withPolicy("Delete In Use Co");
    const customer = (await v.admin.createCustomer({ name: "Jo", email: "jo@example.com" })).customer!;
    const { license } = await v.admin.createLicense({ policyId: policy.id, customerId: customer.id });
    expect(await failure(v.admin.deletePolicy({ id: policy.id }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "IN_USE",
    });
    expect((await v.admin.getPolicy({ id: policy.id })).policy!.id).toBe(policy.id);
    // Once its licenses are gone, it can go.
    await v.admin.deleteLicense({ id: license!.id });
    await v.admin.deletePolicy({ id: policy.id });
  });

  it("gives another tenant NOT_FOUND, read keys PERMISSION_DENIED and bad ids INVALID_ARGUMENT, deleting nothing", async () => {
    const { v, policy } = await withPolicy("Delete Guard Co");
    const other = await vendor("Delete Stranger Co");
    expect(await failure(other.admin.deletePolicy({ id: policy.id }))).toMatchObject({
      code: "NotFound",
      reason: "POLICY_NOT_FOUND",
    });
    expect(await failure(other.admin.deletePolicy({ tenantId: v.tenantId, id: policy.id }))).toMatchObject({
      code: "NotFound",
    });
    expect(await failure(v.read.deletePolicy({ id: policy.id }))).toMatchObject({
      code: "PermissionDenied",
      reason: "SCOPE_REQUIRED",
    });
    expect(await failure(v.ingest.deletePolicy({ id: policy.id }))).toMatchObject({ code: "PermissionDenied" });
    expect(await failure(anonymous().deletePolicy({ id: policy.id }))).toMatchObject({ code: "Unauthenticated" });
    expect(await failure(v.admin.deletePolicy({ id: "pol_nope" }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "id" },
    });
    expect(await failure(v.admin.deletePolicy({ id: "" }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "id" },
    });
    expect(
      await failure(v.admin.deletePolicy({ id: policy.id, idempotencyKey: "spaces are not allowed" })),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "idempotency_key" } });
    expect(await failure(v.admin.deletePolicy({ id: "pol_00000000000000000000000000" }))).toMatchObject({
      code: "NotFound",
      reason: "POLICY_NOT_FOUND",
    });
    expect((await v.admin.getPolicy({ id: policy.id })).policy!.name).toBe("doomed");
    expect((await v.audit.listAuditEvents({ subject: policy.id, typePrefix: "policy.deleted" })).events).toEqual([]);
    // The super-admin may, naming the tenant.
    expect((await superAdmin().deletePolicy({ tenantId: v.tenantId, id: policy.id })).policy!.id).toBe(policy.id);
  });
});

describe("UpdateCustomer", () => {
  async function withCustomer(name: string) {
    const v = await vendor(name);
    const customer = (
      await v.admin.createCustomer({
        name: "Jane Doe",
        email: "jane@example.com",
        organization: "Acme",
        metadata: { crm: "42" },
      })
    ).customer!;
    return { v, customer };
  }

  it("changes only the fields the mask names, audits the change, and finds the customer by the new email", async () => {
    const { v, customer } = await withCustomer("Update Customer Co");
    const renamed = await v.admin.updateCustomer({
      id: customer.id,
      name: "Jane Smith",
      email: "ignored@example.com",
      updateMask: { paths: ["name"] },
    });
    expect(renamed.customer).toMatchObject({
      id: customer.id,
      name: "Jane Smith",
      email: "jane@example.com",
      organization: "Acme",
      metadata: { crm: "42" },
    });

    const moved = await v.admin.updateCustomer({
      id: customer.id,
      email: "jane@smith.example",
      organization: "",
      metadata: { crm: "43", tier: "gold" },
      updateMask: { paths: ["email", "organization", "metadata"] },
    });
    expect(moved.customer).toMatchObject({
      name: "Jane Smith",
      email: "jane@smith.example",
      organization: "",
      metadata: { crm: "43", tier: "gold" },
    });
    expect((await v.read.getCustomer({ id: customer.id })).customer).toMatchObject({
      name: "Jane Smith",
      email: "jane@smith.example",
      metadata: { crm: "43", tier: "gold" },
    });
    expect((await v.admin.listCustomers({ email: "JANE@smith.example" })).customers.map((c) => c.id)).toEqual([
      customer.id,
    ]);
    expect((await v.admin.listCustomers({ email: "jane@example.com" })).customers).toEqual([]);
    // The old address is free again.
    await v.admin.createCustomer({ name: "New Jane", email: "jane@example.com" });
    const updates = (await v.audit.listAuditEvents({ subject: customer.id, typePrefix: "customer.updated" })).events;
    expect(updates).toHaveLength(2);
  });

  it("refuses an email another customer has (any case), keeping both", async () => {
    const { v, customer } = await withCustomer("Update Email Taken Co");
    await v.admin.createCustomer({ name: "Bob", email: "bob@example.com" });
    expect(
      await failure(
        v.admin.updateCustomer({ id: customer.id, email: "BOB@example.com", updateMask: { paths: ["email"] } }),
      ),
    ).toMatchObject({
      code: "AlreadyExists",
      reason: "CUSTOMER_EMAIL_TAKEN",
      metadata: { field: "email" },
    });
    expect((await v.admin.getCustomer({ id: customer.id })).customer!.email).toBe("jane@example.com");
  });

  it("refuses bad input with the field named, changing nothing", async () => {
    const { v, customer } = await withCustomer("Update Bad Input Co");
    const bad = async (req: Parameters<typeof v.admin.updateCustomer>[0], field: string) =>
      expect(await failure(v.admin.updateCustomer({ id: customer.id, ...req }))).toMatchObject({
        code: "InvalidArgument",
        metadata: { field },
      });
    await bad({ name: "x" }, "update_mask");
    await bad({ name: "x", updateMask: { paths: ["nickname"] } }, "update_mask");
    await bad({ updateMask: { paths: ["tenant_id"] } }, "update_mask");
    await bad({ name: "", updateMask: { paths: ["name"] } }, "name");
    await bad({ name: "x".repeat(201), updateMask: { paths: ["name"] } }, "name");
    await bad({ email: "", updateMask: { paths: ["email"] } }, "email");
    await bad({ email: "not-an-email", updateMask: { paths: ["email"] } }, "email");
    await bad({ organization: "o".repeat(201), updateMask: { paths: ["organization"] } }, "organization");
    await bad({ metadata: { "bad key": "v" }, updateMask: { paths: ["metadata"] } }, 'metadata["bad key"]');
    await bad({ id: "cus_x", name: "x", updateMask: { paths: ["name"] } }, "id");
    expect((await v.admin.getCustomer({ id: customer.id })).customer).toMatchObject({
      name: "Jane Doe",
      email: "jane@example.com",
      organization: "Acme",
      metadata: { crm: "42" },
    });
    expect((await v.audit.listAuditEvents({ subject: customer.id, typePrefix: "customer.updated" })).events).toEqual(
      [],
    );
  });

  it("gives another tenant NOT_FOUND and read keys PERMISSION_DENIED, changing nothing", async () => {
    const { v, customer } = await withCustomer("Update Guard Co");
    const other = await vendor("Update Stranger Co");
    const rename = { id: customer.id, name: "Hijacked", updateMask: { paths: ["name"] } };
    expect(await failure(other.admin.updateCustomer(rename))).toMatchObject({
      code: "NotFound",
      reason: "CUSTOMER_NOT_FOUND",
    });
    expect(await failure(other.admin.updateCustomer({ ...rename, tenantId: v.tenantId }))).toMatchObject({
      code: "NotFound",
    });
    expect(await failure(v.read.updateCustomer(rename))).toMatchObject({
      code: "PermissionDenied",
      reason: "SCOPE_REQUIRED",
    });
    expect(await failure(anonymous().updateCustomer(rename))).toMatchObject({ code: "Unauthenticated" });
    expect(await failure(v.admin.updateCustomer({ ...rename, id: "cus_00000000000000000000000000" }))).toMatchObject({
      code: "NotFound",
      reason: "CUSTOMER_NOT_FOUND",
    });
    expect((await v.admin.getCustomer({ id: customer.id })).customer!.name).toBe("Jane Doe");
    // The super-admin may, naming the tenant; a retry with the same idempotency key answers the first result.
    const first = await superAdmin().updateCustomer({
      ...rename,
      name: "Jane Admin",
      tenantId: v.tenantId,
      idempotencyKey: "upd-1",
    });
    const retry = await superAdmin().updateCustomer({
      ...rename,
      name: "Jane Admin",
      tenantId: v.tenantId,
      idempotencyKey: "upd-1",
    });
    expect(retry).toEqual(first);
    expect(first.customer!.name).toBe("Jane Admin");
    expect(
      (await v.audit.listAuditEvents({ subject: customer.id, typePrefix: "customer.updated" })).events,
    ).toHaveLength(1);
  });
});
