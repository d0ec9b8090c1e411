import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type ApiKey, ApiKeyScope } from "@licensd/client/gen/licensd/tenant/v1/api_key_pb.js";
import { useState } from "preact/hooks";
import {
  Badge,
  CopyButton,
  Empty,
  ErrorBox,
  enumName,
  Field,
  Loading,
  Page,
  Pager,
  Table,
  useAction,
  usePages,
  useScope,
  when,
} from "../ui";

const SCOPES = [
  { scope: ApiKeyScope.ADMIN, label: "admin", hint: "every read and change, API keys included" },
  { scope: ApiKeyScope.READ, label: "read", hint: "read-only" },
  { scope: ApiKeyScope.INGEST, label: "ingest", hint: "upload usage events" },
];

/** The API keys page: the signed-in tenant's keys, or those of the tenant the super-admin picked. */
export function ApiKeys() {
  const { tenantId } = useScope();
  return (
    <Page title="API keys">
      <ApiKeysPanel tenantId={tenantId} />
    </Page>
  );
}

function keyState(k: ApiKey): string {
  if (k.revokeTime) return "revoked";
  if (k.expireTime && Number(k.expireTime.seconds) * 1000 <= Date.now()) return "expired";
  return "active";
}

/** A tenant's keys: list, create (secret shown once), revoke. `tenantId` "" is the caller's own tenant. */
export function ApiKeysPanel({ tenantId }: { tenantId: string }) {
  const { client } = useScope();
  const [showRevoked, setShowRevoked] = useState(false);
  const [created, setCreated] = useState<{ key: ApiKey; secret: string }>();
  const keys = usePages(
    async (pageToken) => {
      const r = await client.tenant.listApiKeys({ tenantId, showRevoked, pageSize: 50, pageToken });
      return { items: r.apiKeys, next: r.nextPageToken };
    },
    [tenantId, showRevoked],
  );
  return (
    <section class="api-keys" aria-label="API keys">
      <details class="panel" open={keys.data !== undefined && keys.items.length === 0}>
        <summary>New API key</summary>
        <CreateKeyForm
          tenantId={tenantId}
          onCreated={(key, secret) => {
            setCreated({ key, secret });
            keys.reload();
          }}
        />
      </details>
      {created ? (
        <div class="secret" role="status">
          <span>
            Secret of “{created.key.name}” — shown only now, licensd keeps just its digest:{" "}
            <code data-testid="secret">{created.secret}</code>
          </span>
          <CopyButton text={created.secret} label="Copy secret" />
          <button type="button" onClick={() => setCreated(undefined)}>
            Done
          </button>
        </div>
      ) : null}
      <div class="field check-field">
        <input
          id="show-revoked"
          type="checkbox"
          checked={showRevoked}
          onChange={(e) => setShowRevoked(e.currentTarget.checked)}
        />
        <label for="show-revoked">Show revoked keys</label>
      </div>
      <ErrorBox error={keys.error} />
      {keys.loading && keys.items.length === 0 ? (
        <Loading />
      ) : keys.items.length === 0 && !keys.error ? (
        <Empty>
          <p>
            No {showRevoked ? "" : "live "}API keys. Create one above for each system that calls licensd, with the least
            scope it needs.
          </p>
        </Empty>
      ) : (
        <Table
          label="API keys"
          rows={keys.items}
          columns={[
            { title: "Name", cell: (k) => k.name },
            { title: "Prefix", cell: (k) => <code>{k.prefix}…</code> },
            {
              title: "Scopes",
              cell: (k) =>
                [...k.scopes]
                  .sort((a, b) => a - b)
                  .map((s) => enumName(ApiKeyScope, s))
                  .join(", "),
            },
            { title: "Status", cell: (k) => <Badge value={keyState(k)} /> },
            { title: "Created", cell: (k) => when(k.createTime) },
            { title: "Expires", cell: (k) => (k.expireTime ? when(k.expireTime) : "never") },
            { title: "", cell: (k) => (k.revokeTime ? null : <RevokeButton apiKey={k} onRevoked={keys.reload} />) },
          ]}
        />
      )}
      <Pager {...keys} />
    </section>
  );
}

function CreateKeyForm({ tenantId, onCreated }: { tenantId: string; onCreated: (k: ApiKey, secret: string) => void }) {
  const { client } = useScope();
  const [name, setName] = useState("");
  const [scopes, setScopes] = useState<ApiKeyScope[]>([ApiKeyScope.READ]);
  const [expires, setExpires] = useState("");
  const action = useAction();
  return (
    <form
      onSubmit={async (e) => {
        e.preventDefault();
        const r = await action.run(() =>
          client.tenant.createApiKey({
            tenantId,
            name: name.trim(),
            scopes,
            expireTime: expires ? timestampFromDate(new Date(expires)) : undefined,
          }),
        );
        if (r?.apiKey) {
          onCreated(r.apiKey, r.secret);
          setName("");
        }
      }}
    >
      <Field id="key-name" label="Key name" hint="What uses it, e.g. “billing backend”.">
        <input
          id="key-name"
          aria-describedby="key-name-hint"
          required
          maxLength={100}
          value={name}
          onInput={(e) => setName(e.currentTarget.value)}
        />
      </Field>
      <fieldset class="scopes">
        <legend>Scopes</legend>
        {SCOPES.map((s) => (
          <div class="check-field" key={s.scope}>
            <input
              id={`scope-${s.label}`}
              type="checkbox"
              checked={scopes.includes(s.scope)}
              onChange={(e) =>
                setScopes(e.currentTarget.checked ? [...scopes, s.scope] : scopes.filter((x) => x !== s.scope))
              }
            />
            <label for={`scope-${s.label}`}>
              {s.label} <span class="muted">— {s.hint}</span>
            </label>
          </div>
        ))}
      </fieldset>
      <Field id="key-expires" label="Expires" hint="Optional; empty for a key that does not expire.">
        <input
          id="key-expires"
          aria-describedby="key-expires-hint"
          type="datetime-local"
          value={expires}
          onInput={(e) => setExpires(e.currentTarget.value)}
        />
      </Field>
      <button type="submit" disabled={action.busy || scopes.length === 0 || name.trim() === ""}>
        Create API key
      </button>
      <ErrorBox error={action.error} />
    </form>
  );
}

function RevokeButton({ apiKey, onRevoked }: { apiKey: ApiKey; onRevoked: () => void }) {
  const { client } = useScope();
  const [confirming, setConfirming] = useState(false);
  const action = useAction();
  if (!confirming)
    return (
      <button type="button" class="danger" aria-label={`Revoke ${apiKey.name}`} onClick={() => setConfirming(true)}>
        Revoke
      </button>
    );
  return (
    <span class="confirm">
      Stops working at once.{" "}
      <button
        type="button"
        class="danger"
        disabled={action.busy}
        onClick={async () => {
          const r = await action.run(() => client.tenant.revokeApiKey({ id: apiKey.id }));
          if (r) onRevoked();
        }}
      >
        Yes, revoke
      </button>{" "}
      <button type="button" onClick={() => setConfirming(false)}>
        Cancel
      </button>
      <ErrorBox error={action.error} />
    </span>
  );
}
