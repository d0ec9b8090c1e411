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
import { ApiKeysPanel } from "./api-keys";

/** The super-admin's page: the installation's tenants, and one tenant's name and API keys. */
export function Tenants({ params }: { params: string[] }) {
  return params[0] ? <TenantPage id={params[0]} /> : <TenantList />;
}

function TenantList() {
  const { client } = useScope();
  const tenants = usePages(async (pageToken) => {
    const r = await client.tenant.listTenants({ pageSize: 50, pageToken });
    return { items: r.tenants, next: r.nextPageToken };
  }, []);
  const [name, setName] = useState("");
  const action = useAction();
  return (
    <Page title="Tenants">
      <form
        class="inline"
        onSubmit={async (e) => {
          e.preventDefault();
          const r = await action.run(() => client.tenant.createTenant({ name: name.trim() }));
          if (r?.tenant) go("tenants", r.tenant.id);
        }}
      >
        <Field id="tenant-name" label="New tenant name">
          <input
            id="tenant-name"
            required
            maxLength={200}
            value={name}
            onInput={(e) => setName(e.currentTarget.value)}
          />
        </Field>
        <div class="field">
          <button type="submit" disabled={action.busy || name.trim() === ""}>
            Create tenant
          </button>
        </div>
      </form>
      <ErrorBox error={action.error} />
      <ErrorBox error={tenants.error} />
      {tenants.loading && tenants.items.length === 0 ? (
        <Loading />
      ) : tenants.items.length === 0 && !tenants.error ? (
        <Empty>
          <p>No tenants yet. Create one above for each vendor on this installation, then give it an admin API key.</p>
        </Empty>
      ) : (
        <Table
          label="tenants"
          rows={tenants.items}
          columns={[
            { title: "Name", cell: (t) => <a href={href("tenants", t.id)}>{t.name}</a> },
            { title: "Id", cell: (t) => <code>{t.id}</code> },
            { title: "Created", cell: (t) => when(t.createTime) },
          ]}
        />
      )}
      <Pager {...tenants} />
    </Page>
  );
}

function TenantPage({ id }: { id: string }) {
  const { client } = useScope();
  const tenant = useAsync(async () => (await client.tenant.getTenant({ id })).tenant, [id]);
  const [name, setName] = useState<string>();
  const [confirming, setConfirming] = useState(false);
  const [deleted, setDeleted] = useState(false);
  const action = useAction();
  const t = tenant.data;
  const back = (
    <a href={href("tenants")} class="back">
      ← All tenants
    </a>
  );
  if (deleted)
    return (
      <Page title="Tenant" actions={back}>
        <Empty>
          <p>
            The tenant was deleted: its keys stopped working; its audit history is kept.{" "}
            <a href={href("tenants")}>Back to the tenants</a>.
          </p>
        </Empty>
      </Page>
    );
  return (
    <Page title={t ? `Tenant ${t.name}` : "Tenant"} actions={back}>
      <ErrorBox error={tenant.error} />
      {!t ? (
        tenant.loading ? (
          <Loading />
        ) : null
      ) : (
        <>
          <dl class="facts">
            <dt>Id</dt>
            <dd>
              <code>{t.id}</code>
            </dd>
            <dt>Created</dt>
            <dd>{when(t.createTime)}</dd>
          </dl>
          <form
            class="inline"
            onSubmit={async (e) => {
              e.preventDefault();
              const r = await action.run(() =>
                client.tenant.updateTenant({
                  tenant: { id: t.id, name: (name ?? t.name).trim() },
                  updateMask: { paths: ["name"] },
                }),
              );
              if (r) {
                setName(undefined);
                tenant.reload();
              }
            }}
          >
            <Field id="rename" label="Tenant name">
              <input
                id="rename"
                required
                maxLength={200}
                value={name ?? t.name}
                onInput={(e) => setName(e.currentTarget.value)}
              />
            </Field>
            <div class="field">
              <button type="submit" disabled={action.busy || name === undefined || name.trim() === t.name}>
                Rename
              </button>
            </div>
            <div class="field">
              {confirming ? (
                <span class="confirm">
                  Delete {t.name}? Its keys stop working at once.{" "}
                  <button
                    type="button"
                    class="danger"
                    disabled={action.busy}
                    onClick={async () => {
                      const r = await action.run(() => client.tenant.deleteTenant({ id: t.id }));
                      if (r) setDeleted(true);
                    }}
                  >
                    Yes, delete
                  </button>{" "}
                  <button type="button" onClick={() => setConfirming(false)}>
                    Cancel
                  </button>
                </span>
              ) : (
                <button type="button" class="danger" onClick={() => setConfirming(true)}>
                  Delete tenant
                </button>
              )}
            </div>
          </form>
          <ErrorBox error={action.error} />
          <h2>API keys</h2>
          <ApiKeysPanel tenantId={t.id} />
        </>
      )}
    </Page>
  );
}
