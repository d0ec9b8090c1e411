import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ListOrder } from "@licensd/client/gen/licensd/audit/v1/audit_service_pb.js";
import type { Customer } from "@licensd/client/gen/licensd/licensing/v1/customer_pb.js";
import { type License, LicenseStatus } from "@licensd/client/gen/licensd/licensing/v1/license_pb.js";
import type { Product } from "@licensd/client/gen/licensd/licensing/v1/product_pb.js";
import { useEffect, useRef, useState } from "preact/hooks";
import { href } from "../router";
import {
  Badge,
  CopyButton,
  Empty,
  ErrorBox,
  Field,
  enumName,
  Loading,
  Page,
  Pager,
  Table,
  useAction,
  useAsync,
  usePages,
  useScope,
  when,
} from "../ui";
import { MachineTable, ProcessTable } from "./machines";
import { LicenseUsage } from "./license-usage-chart";
import "./licenses.css";

const STATUSES = ["ACTIVE", "SUSPENDED", "EXPIRED", "REVOKED"] as const;

/** `#/licenses` lists and creates; `#/licenses/lic_…` shows one license. */
export function Licenses({ params }: { params: string[] }) {
  const id = params[0];
  return id ? <LicenseDetail id={id} /> : <LicenseList />;
}

/** The tenant's products and customers, for pickers and for names in tables. */
function useCatalogue() {
  const { client, tenantId } = useScope();
  return useAsync(async () => {
    const [products, customers] = await Promise.all([
      client.licensing.listProducts({ tenantId, pageSize: 1000 }),
      client.licensing.listCustomers({ tenantId, pageSize: 1000 }),
    ]);
    return { products: products.products, customers: customers.customers };
  }, [tenantId]);
}

const productName = (products: Product[] | undefined, id: string) => {
  const p = products?.find((x) => x.id === id);
  return p ? `${p.name} (${p.code})` : id;
};
const customerName = (customers: Customer[] | undefined, id: string) => {
  const c = customers?.find((x) => x.id === id);
  return c ? `${c.name} <${c.email}>` : id;
};

function LicenseList() {
  const { client, tenantId } = useScope();
  const catalogue = useCatalogue();
  const [status, setStatus] = useState("");
  const [productId, setProductId] = useState("");
  const [customerId, setCustomerId] = useState("");
  const [created, setCreated] = useState<{ license: License; key: string }>();
  const list = usePages(
    async (pageToken) => {
      const r = await client.licensing.listLicenses({
        tenantId,
        status: status ? LicenseStatus[status as (typeof STATUSES)[number]] : LicenseStatus.UNSPECIFIED,
        productId,
        customerId,
        pageSize: 50,
        pageToken,
      });
      return { items: r.licenses, next: r.nextPageToken };
    },
    [tenantId, status, productId, customerId],
  );
  const products = catalogue.data?.products;
  const customers = catalogue.data?.customers;
  const filtered = status !== "" || productId !== "" || customerId !== "";
  return (
    <Page title="Licenses">
      <ErrorBox error={catalogue.error} />
      {created ? (
        <NewKey license={created.license} licenseKey={created.key} onDismiss={() => setCreated(undefined)} />
      ) : null}
      {catalogue.data ? (
        <CreateLicense
          products={catalogue.data.products}
          customers={catalogue.data.customers}
          onCreated={(c) => {
            setCreated(c);
            list.reload();
          }}
        />
      ) : null}
      <form class="inline filters" aria-label="filters" onSubmit={(e) => e.preventDefault()}>
        <Field id="filter-status" label="Status">
          <select id="filter-status" value={status} onChange={(e) => setStatus(e.currentTarget.value)}>
            <option value="">Any</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s.toLowerCase()}
              </option>
            ))}
          </select>
        </Field>
        <Field id="filter-product" label="Product">
          <select id="filter-product" value={productId} onChange={(e) => setProductId(e.currentTarget.value)}>
            <option value="">Any</option>
            {(products ?? []).map((p) => (
              <option key={p.id} value={p.id}>
                {p.name} ({p.code})
              </option>
            ))}
          </select>
        </Field>
        <Field id="filter-customer" label="Customer">
          <select id="filter-customer" value={customerId} onChange={(e) => setCustomerId(e.currentTarget.value)}>
            <option value="">Any</option>
            {(customers ?? []).map((c) => (
              <option key={c.id} value={c.id}>
                {c.name}
              </option>
            ))}
          </select>
        </Field>
      </form>
      <ErrorBox error={list.error} />
      {list.loading && !list.data ? <Loading /> : null}
      {list.data && list.items.length === 0 ? (
        <Empty>
          {filtered ? (
            <p>No license matches these filters. Set a filter back to “Any” to see more.</p>
          ) : products && products.length === 0 ? (
            <p>
              No licenses yet. Create a product and a policy first (Products, Policies), then a customer; then issue a
              license here.
            </p>
          ) : (
            <p>No licenses yet. Open “New license” above to issue the first one.</p>
          )}
        </Empty>
      ) : null}
      {list.items.length > 0 ? (
        <Table
          label="licenses"
          rows={list.items}
          columns={[
            {
              title: "License",
              cell: (l) => (
                <a href={href("licenses", l.id)}>
                  <code>{l.keyPrefix || l.id}</code>
                </a>
              ),
            },
            { title: "Status", cell: (l) => <Badge value={enumName(LicenseStatus, l.status)} /> },
            { title: "Product", cell: (l) => productName(products, l.productId) },
            { title: "Customer", cell: (l) => customerName(customers, l.customerId) },
            {
              title: "Expires",
              cell: (l) => (l.expireTime ? when(l.expireTime) : l.expiryPending ? "not started" : "never"),
            },
            { title: "Created", cell: (l) => when(l.createTime) },
          ]}
        />
      ) : null}
      <Pager {...list} />
    </Page>
  );
}

/** The key of a license just created: shown here once, never again. */
function NewKey({ license, licenseKey, onDismiss }: { license: License; licenseKey: string; onDismiss: () => void }) {
  return (
    <div class="new-key" role="status" aria-labelledby="new-key-title">
      <h2 id="new-key-title">License created</h2>
      <p>
        <strong>Copy the key now: it will not be shown again.</strong> licensd keeps only its digest (an admin may
        re-deliver it with RevealLicenseKey, which is audited).
      </p>
      <div class="secret">
        <code data-testid="license-key">{licenseKey}</code>
        <CopyButton text={licenseKey} label="Copy key" />
      </div>
      <p>
        <a href={href("licenses", license.id)}>Open the license</a>{" "}
        <button type="button" onClick={onDismiss}>
          I have copied it
        </button>
      </p>
    </div>
  );
}

function CreateLicense({
  products,
  customers,
  onCreated,
}: {
  products: Product[];
  customers: Customer[];
  onCreated: (c: { license: License; key: string }) => void;
}) {
  const { client, tenantId } = useScope();
  const [productId, setProductId] = useState("");
  const [policyId, setPolicyId] = useState("");
  const [customerId, setCustomerId] = useState("");
  const [expiry, setExpiry] = useState("");
  const action = useAction();
  const policies = useAsync(async () => {
    if (!productId) return [];
    return (await client.licensing.listPolicies({ tenantId, productId, pageSize: 1000 })).policies;
  }, [tenantId, productId]);
  useEffect(() => setPolicyId(policies.data?.[0]?.id ?? ""), [policies.data]);
  if (products.length === 0 || customers.length === 0) {
    return (
      <Empty>
        <p>
          To issue a license you need a product with a policy and a customer.{" "}
          {products.length === 0 ? "Create a product (and a policy for it) on the Products page. " : ""}
          {customers.length === 0 ? "Add a customer on the Customers page." : ""}
        </p>
      </Empty>
    );
  }
  return (
    <details class="panel">
      <summary>New license</summary>
      <form
        class="inline"
        aria-label="new license"
        onSubmit={async (e) => {
          e.preventDefault();
          const r = await action.run(() =>
            client.licensing.createLicense({
              tenantId,
              policyId,
              customerId,
              expireTime: expiry ? timestampFromDate(new Date(`${expiry}T23:59:59Z`)) : undefined,
            }),
          );
          if (r?.license) {
            onCreated({ license: r.license, key: r.key });
            setExpiry("");
          }
        }}
      >
        <Field id="new-product" label="Product">
          <select id="new-product" required value={productId} onChange={(e) => setProductId(e.currentTarget.value)}>
            <option value="">— pick a product —</option>
            {products.map((p) => (
              <option key={p.id} value={p.id}>
                {p.name} ({p.code})
              </option>
            ))}
          </select>
        </Field>
        <Field
          id="new-policy"
          label="Policy"
          hint={
            productId && policies.data?.length === 0
              ? "This product has no policy yet: add one on Policies."
              : undefined
          }
        >
          <select
            id="new-policy"
            required
            disabled={!productId}
            value={policyId}
            onChange={(e) => setPolicyId(e.currentTarget.value)}
          >
            {(policies.data ?? []).map((p) => (
              <option key={p.id} value={p.id}>
                {p.name}
              </option>
            ))}
          </select>
        </Field>
        <Field id="new-customer" label="Customer">
          <select id="new-customer" required value={customerId} onChange={(e) => setCustomerId(e.currentTarget.value)}>
            <option value="">— pick a customer —</option>
            {customers.map((c) => (
              <option key={c.id} value={c.id}>
                {c.name} &lt;{c.email}&gt;
              </option>
            ))}
          </select>
        </Field>
        <Field id="new-expiry" label="Expires on (optional)" hint="Empty: the policy's duration from today, or never.">
          <input id="new-expiry" type="date" value={expiry} onInput={(e) => setExpiry(e.currentTarget.value)} />
        </Field>
        <button type="submit" disabled={action.busy || !policyId || !customerId}>
          Create license
        </button>
      </form>
      <ErrorBox error={action.error} />
      <ErrorBox error={policies.error} />
    </details>
  );
}

function LicenseDetail({ id }: { id: string }) {
  const { client, tenantId } = useScope();
  const catalogue = useCatalogue();
  const license = useAsync(async () => (await client.licensing.getLicense({ tenantId, id })).license, [tenantId, id]);
  const [shown, setShown] = useState<License>();
  const [changes, setChanges] = useState(0);
  useEffect(() => setShown(license.data), [license.data]);
  const l = shown;
  const changed = (next: License | undefined) => {
    if (next) setShown(next);
    setChanges((n) => n + 1);
  };
  return (
    <Page title="License" actions={<a href={href("licenses")}>← All licenses</a>}>
      <ErrorBox error={license.error} />
      {license.loading && !l ? <Loading /> : null}
      {l ? (
        <>
          <dl class="facts">
            <dt>Id</dt>
            <dd>
              <code>{l.id}</code>
            </dd>
            <dt>Status</dt>
            <dd data-testid="license-status">
              <Badge value={enumName(LicenseStatus, l.status)} />
            </dd>
            <dt>Key</dt>
            <dd>
              <code>{l.keyPrefix}</code>
            </dd>
            <dt>Product</dt>
            <dd>{productName(catalogue.data?.products, l.productId)}</dd>
            <dt>Customer</dt>
            <dd data-testid="license-customer">{customerName(catalogue.data?.customers, l.customerId)}</dd>
            <dt>Expires</dt>
            <dd data-testid="license-expiry">
              {l.expireTime
                ? when(l.expireTime)
                : l.expiryPending
                  ? "not started (at its first activation, validation or use)"
                  : "never"}
            </dd>
            {l.suspendTime ? (
              <>
                <dt>Suspended</dt>
                <dd>{when(l.suspendTime)}</dd>
              </>
            ) : null}
            {l.revokeTime ? (
              <>
                <dt>Revoked</dt>
                <dd>{when(l.revokeTime)}</dd>
              </>
            ) : null}
            <dt>Created</dt>
            <dd>{when(l.createTime)}</dd>
          </dl>
          <LicenseActions license={l} customers={catalogue.data?.customers ?? []} onChanged={changed} />
          <LicenseFile license={l} />
          <section aria-labelledby="machines-title">
            <h2 id="machines-title">Machines</h2>
            <MachineTable
              licenseId={l.id}
              emptyText="No machine is activated on this license. The SDK activates one with the license key (ActivationService Activate)."
            />
          </section>
          <ProcessTable licenseId={l.id} />
          <LicenseUsers licenseId={l.id} onChanged={() => changed(undefined)} />
          <LicenseUsage licenseId={l.id} productId={l.productId} />
          <AuditTimeline subject={l.id} refresh={changes} />
        </>
      ) : null}
    </Page>
  );
}

function LicenseActions({
  license,
  customers,
  onChanged,
}: {
  license: License;
  customers: Customer[];
  onChanged: (l: License | undefined) => void;
}) {
  const { client, tenantId } = useScope();
  const action = useAction();
  const [confirmRevoke, setConfirmRevoke] = useState(false);
  // The question takes the focus, on its safe answer, so Enter twice never revokes by accident.
  const cancelRevoke = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (confirmRevoke) cancelRevoke.current?.focus();
  }, [confirmRevoke]);
  const [transferTo, setTransferTo] = useState("");
  const id = license.id;
  const run = async (fn: () => Promise<{ license?: License }>) => {
    const r = await action.run(fn);
    if (r) onChanged(r.license);
  };
  const revoked = license.status === LicenseStatus.REVOKED;
  return (
    <section aria-labelledby="actions-title">
      <h2 id="actions-title">Actions</h2>
      <div class="actions">
        {license.status === LicenseStatus.SUSPENDED ? (
          <button
            type="button"
            disabled={action.busy}
            onClick={() => run(() => client.licensing.reinstateLicense({ tenantId, id }))}
          >
            Reinstate
          </button>
        ) : (
          <button
            type="button"
            disabled={action.busy || revoked}
            onClick={() => run(() => client.licensing.suspendLicense({ tenantId, id }))}
          >
            Suspend
          </button>
        )}
        <button
          type="button"
          disabled={action.busy || revoked}
          onClick={() => run(() => client.licensing.renewLicense({ tenantId, id }))}
        >
          Renew
        </button>
        {confirmRevoke ? (
          <fieldset class="confirm">
            <legend>Revoke for good? Validation will answer REVOKED from now on.</legend>
            <button
              type="button"
              class="danger"
              disabled={action.busy}
              onClick={async () => {
                await run(() => client.licensing.revokeLicense({ tenantId, id }));
                setConfirmRevoke(false);
              }}
            >
              Yes, revoke
            </button>
            <button type="button" ref={cancelRevoke} onClick={() => setConfirmRevoke(false)}>
              Cancel
            </button>
          </fieldset>
        ) : (
          <button type="button" class="danger" disabled={action.busy || revoked} onClick={() => setConfirmRevoke(true)}>
            Revoke…
          </button>
        )}
      </div>
      <form
        class="inline"
        onSubmit={async (e) => {
          e.preventDefault();
          await run(() => client.licensing.transferLicense({ tenantId, id, customerId: transferTo }));
          setTransferTo("");
        }}
      >
        <Field id="transfer-to" label="Transfer to customer">
          <select id="transfer-to" value={transferTo} onChange={(e) => setTransferTo(e.currentTarget.value)}>
            <option value="">— pick a customer —</option>
            {customers
              .filter((c) => c.id !== license.customerId)
              .map((c) => (
                <option key={c.id} value={c.id}>
                  {c.name} &lt;{c.email}&gt;
                </option>
              ))}
          </select>
        </Field>
        <button type="submit" disabled={action.busy || transferTo === ""}>
          Transfer
        </button>
      </form>
      <ErrorBox error={action.error} />
    </section>
  );
}

/**
 * IssueLicenseFile, offered as a download: the signed text goes into a Blob and an
 * `<a download>` points at its object URL (a navigation, not a fetch: no script, no CSP change).
 */
function LicenseFile({ license }: { license: License }) {
  const { client, tenantId } = useScope();
  const action = useAction();
  const [file, setFile] = useState<{ url: string; expires: string }>();
  useEffect(() => () => file && URL.revokeObjectURL(file.url), [file]);
  return (
    <section aria-labelledby="file-title">
      <h2 id="file-title">Offline license file</h2>
      <p class="muted">A signed file (licensd1.…) the SDKs verify without calling licensd.</p>
      <div class="actions">
        <button
          type="button"
          disabled={action.busy}
          onClick={async () => {
            const r = await action.run(() => client.licensing.issueLicenseFile({ tenantId, licenseId: license.id }));
            if (!r) return;
            const url = URL.createObjectURL(new Blob([`${r.licenseFile}\n`], { type: "text/plain" }));
            setFile({ url, expires: r.expireTime ? when(r.expireTime) : "never" });
          }}
        >
          Issue license file
        </button>
        {file ? (
          <span>
            <a href={file.url} download={`${license.id}.lic`}>
              Download license file
            </a>{" "}
            <span class="muted">(verifies until {file.expires})</span>
          </span>
        ) : null}
      </div>
      <ErrorBox error={action.error} />
    </section>
  );
}

/** The users attached to the license (at most its policy's max users), with add and remove. */
function LicenseUsers({ licenseId, onChanged }: { licenseId: string; onChanged: () => void }) {
  const { client, tenantId } = useScope();
  const action = useAction();
  const [refresh, setRefresh] = useState(0);
  const [user, setUser] = useState("");
  const [name, setName] = useState("");
  const users = usePages(
    async (pageToken) => {
      const r = await client.licensing.listLicenseUsers({ tenantId, licenseId, pageSize: 20, pageToken });
      return { items: r.licenseUsers, next: r.nextPageToken };
    },
    [tenantId, licenseId, refresh],
  );
  const done = (ok: unknown) => {
    if (!ok) return;
    setRefresh((n) => n + 1);
    onChanged();
  };
  return (
    <section aria-labelledby="users-title">
      <h2 id="users-title">Users</h2>
      <ErrorBox error={users.error} />
      {users.data && users.items.length === 0 ? (
        <p class="muted">No user is attached to this license: validation is not scoped to a user.</p>
      ) : (
        <Table
          label="license users"
          rows={users.items}
          columns={[
            { title: "User", cell: (u) => <code>{u.user}</code> },
            { title: "Name", cell: (u) => u.name },
            { title: "Added", cell: (u) => when(u.createTime) },
            {
              title: "",
              cell: (u) => (
                <button
                  type="button"
                  disabled={action.busy}
                  aria-label={`Remove ${u.user}`}
                  onClick={async () =>
                    done(
                      await action.run(() => client.licensing.removeLicenseUser({ tenantId, licenseId, user: u.user })),
                    )
                  }
                >
                  Remove
                </button>
              ),
            },
          ]}
        />
      )}
      <Pager {...users} />
      <form
        class="inline"
        aria-label="Add user"
        onSubmit={async (e) => {
          e.preventDefault();
          const added = await action.run(() =>
            client.licensing.addLicenseUser({ tenantId, licenseId, user: user.trim(), name: name.trim() }),
          );
          if (added) {
            setUser("");
            setName("");
          }
          done(added);
        }}
      >
        <Field id="license-user" label="User" hint="An e-mail or your system's user id.">
          <input
            id="license-user"
            required
            aria-describedby="license-user-hint"
            value={user}
            onInput={(e) => setUser(e.currentTarget.value)}
          />
        </Field>
        <Field id="license-user-name" label="Name">
          <input id="license-user-name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </Field>
        <button type="submit" disabled={action.busy}>
          Add user
        </button>
      </form>
      <ErrorBox error={action.error} />
    </section>
  );
}

/** The license's audit events, newest first (ListAuditEvents by subject). */
function AuditTimeline({ subject, refresh }: { subject: string; refresh: number }) {
  const { client, tenantId } = useScope();
  const events = usePages(
    async (pageToken) => {
      const r = await client.audit.listAuditEvents({
        tenantId,
        subject,
        order: ListOrder.NEWEST_FIRST,
        pageSize: 20,
        pageToken,
      });
      return { items: r.events, next: r.nextPageToken };
    },
    [tenantId, subject, refresh],
  );
  return (
    <section aria-labelledby="timeline-title">
      <h2 id="timeline-title">Audit timeline</h2>
      <ErrorBox error={events.error} />
      {events.data && events.items.length === 0 ? <p class="muted">No audit events about this license yet.</p> : null}
      <ol class="events" aria-label="audit timeline">
        {events.items.map((e) => (
          <li key={e.id} data-type={e.type}>
            <time>{when(e.occurTime)}</time> <code>{e.type}</code> <span class="muted">by {e.actor}</span>
          </li>
        ))}
      </ol>
      <Pager {...events} />
    </section>
  );
}
