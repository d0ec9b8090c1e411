import type { Customer } from "@licensd/client/gen/licensd/licensing/v1/customer_pb.js";
import { useState } from "preact/hooks";
import { go, href } from "../router";
import {
  Empty,
  ErrorBox,
  Field,
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
import {
  DeleteButton,
  MetadataEditor,
  MetadataList,
  type MetadataRow,
  metadataOf,
  metadataRows,
  same,
} from "./catalog-editors";

/** Customers: the people and organisations that hold licenses. */
export function Customers({ params }: { params: string[] }) {
  return params[0] ? <CustomerDetail id={params[0]} /> : <CustomerList />;
}

function CustomerList() {
  const { client, tenantId } = useScope();
  const [creating, setCreating] = useState(false);
  const [email, setEmail] = useState("");
  const [filter, setFilter] = useState("");
  const list = usePages(
    async (pageToken) => {
      const r = await client.licensing.listCustomers({ tenantId, email: filter, pageToken });
      return { items: r.customers, next: r.nextPageToken };
    },
    [tenantId, filter],
  );
  return (
    <Page
      title="Customers"
      actions={
        creating ? null : (
          <button type="button" class="primary" onClick={() => setCreating(true)}>
            New customer
          </button>
        )
      }
    >
      {creating ? (
        <CustomerForm
          onCancel={() => setCreating(false)}
          onSaved={() => {
            setCreating(false);
            list.reload();
          }}
        />
      ) : null}
      <form
        class="inline"
        aria-label="Find a customer"
        onSubmit={(e) => {
          e.preventDefault();
          setFilter(email.trim());
        }}
      >
        <Field id="customer-filter" label="Find by email">
          <input id="customer-filter" type="search" value={email} onInput={(e) => setEmail(e.currentTarget.value)} />
        </Field>
        <div class="field">
          <button type="submit">Find</button>
        </div>
      </form>
      <ErrorBox error={list.error} />
      {list.loading && !list.data ? (
        <Loading />
      ) : list.items.length === 0 && !list.error ? (
        <Empty>
          <p>
            {filter
              ? `No customer with the email ${filter}.`
              : "No customers yet — create one, then issue them licenses on the Licenses page."}
          </p>
        </Empty>
      ) : (
        <Table<Customer>
          label="Customers"
          rows={list.items}
          columns={[
            { title: "Name", cell: (c) => <a href={href("customers", c.id)}>{c.name}</a> },
            { title: "Email", cell: (c) => c.email },
            { title: "Organization", cell: (c) => c.organization || "—" },
            { title: "Created", cell: (c) => when(c.createTime) },
          ]}
        />
      )}
      <Pager {...list} />
    </Page>
  );
}

function CustomerDetail({ id }: { id: string }) {
  const { client, tenantId } = useScope();
  const customer = useAsync(
    async () => (await client.licensing.getCustomer({ tenantId, id })).customer,
    [tenantId, id],
  );
  const [editing, setEditing] = useState(false);
  const c = customer.data;
  return (
    <Page title={c ? `Customer ${c.name}` : "Customer"} actions={<a href={href("customers")}>← All customers</a>}>
      <ErrorBox error={customer.error} />
      {customer.loading && !c ? <Loading /> : null}
      {c ? (
        <>
          <dl class="facts">
            <dt>Id</dt>
            <dd>
              <code>{c.id}</code>
            </dd>
            <dt>Email</dt>
            <dd>{c.email}</dd>
            <dt>Organization</dt>
            <dd>{c.organization || "—"}</dd>
            <dt>Metadata</dt>
            <dd>
              <MetadataList metadata={c.metadata} />
            </dd>
            <dt>Updated</dt>
            <dd>{when(c.updateTime)}</dd>
          </dl>
          {editing ? (
            <CustomerForm
              customer={c}
              onCancel={() => setEditing(false)}
              onSaved={() => {
                setEditing(false);
                customer.reload();
              }}
            />
          ) : (
            <div>
              <button type="button" class="primary" onClick={() => setEditing(true)}>
                Edit customer
              </button>{" "}
              <DeleteButton
                what={`customer ${c.name}`}
                onDelete={async () => {
                  await client.licensing.deleteCustomer({ tenantId, id: c.id });
                  go("customers");
                }}
              />
            </div>
          )}
        </>
      ) : null}
    </Page>
  );
}

function CustomerForm({
  customer,
  onSaved,
  onCancel,
}: {
  customer?: Customer;
  onSaved: () => void;
  onCancel: () => void;
}) {
  const { client, tenantId } = useScope();
  const [name, setName] = useState(customer?.name ?? "");
  const [email, setEmail] = useState(customer?.email ?? "");
  const [organization, setOrganization] = useState(customer?.organization ?? "");
  const [metadata, setMetadata] = useState<MetadataRow[]>(() => metadataRows(customer?.metadata ?? {}));
  const action = useAction();
  const idp = customer ? "edit-customer" : "new-customer";
  return (
    <form
      class="catalog"
      aria-label={customer ? "Edit customer" : "New customer"}
      onSubmit={async (e) => {
        e.preventDefault();
        const fields = {
          name: name.trim(),
          email: email.trim(),
          organization: organization.trim(),
          metadata: metadataOf(metadata),
        };
        const done = await action.run(async () => {
          if (!customer) return client.licensing.createCustomer({ tenantId, ...fields });
          const paths = (["name", "email", "organization", "metadata"] as const).filter(
            (k) => !same(fields[k], customer[k]),
          );
          if (paths.length === 0) return true;
          return client.licensing.updateCustomer({ tenantId, id: customer.id, ...fields, updateMask: { paths } });
        });
        if (done) onSaved();
      }}
    >
      <h2>{customer ? "Edit customer" : "New customer"}</h2>
      <div class="grid">
        <Field id={`${idp}-name`} label="Name">
          <input id={`${idp}-name`} required value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </Field>
        <Field id={`${idp}-email`} label="Email">
          <input
            id={`${idp}-email`}
            type="email"
            required
            value={email}
            onInput={(e) => setEmail(e.currentTarget.value)}
          />
        </Field>
        <Field id={`${idp}-organization`} label="Organization">
          <input
            id={`${idp}-organization`}
            value={organization}
            onInput={(e) => setOrganization(e.currentTarget.value)}
          />
        </Field>
      </div>
      <MetadataEditor rows={metadata} onChange={setMetadata} idPrefix={idp} />
      <ErrorBox error={action.error} />
      <div class="actions">
        <button type="submit" disabled={action.busy}>
          {customer ? "Save customer" : "Create customer"}
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}
