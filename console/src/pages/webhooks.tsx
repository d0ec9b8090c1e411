import type { Duration } from "@bufbuild/protobuf/wkt";
import {
  type WebhookAttempt,
  type WebhookDelivery,
  WebhookDeliveryStatus,
  type WebhookEndpoint,
  WebhookEndpointDisabledReason,
} from "@licensd/client/gen/licensd/webhook/v1/webhook_pb.js";
import { useState } from "preact/hooks";
import { href } from "../router";
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
  useAsync,
  usePages,
  useScope,
  when,
} from "../ui";

/** "license.*, license.suspended" → ["license.*", "license.suspended"]. */
const parseTypes = (text: string) =>
  text
    .split(/[\s,]+/)
    .map((t) => t.trim())
    .filter((t) => t !== "");

const ms = (d: Duration | undefined) => (d ? Number(d.seconds) * 1000 + Math.round(d.nanos / 1e6) : 0);

export function Webhooks({ params }: { params: string[] }) {
  return params[0] ? <EndpointPage id={params[0]} /> : <EndpointList />;
}

function EndpointList() {
  const { client, tenantId } = useScope();
  const [created, setCreated] = useState<{ endpoint: WebhookEndpoint; secret: string }>();
  const endpoints = usePages(
    async (pageToken) => {
      const r = await client.webhook.listWebhookEndpoints({ tenantId, pageSize: 50, pageToken });
      return { items: r.endpoints, next: r.nextPageToken };
    },
    [tenantId],
  );
  return (
    <Page title="Webhooks">
      <details class="panel" open={endpoints.data !== undefined && endpoints.items.length === 0 && !created}>
        <summary>New endpoint</summary>
        <EndpointForm
          submitLabel="Create endpoint"
          onSubmit={async (v) => {
            const r = await client.webhook.createWebhookEndpoint({ tenantId, ...v });
            setCreated({ endpoint: r.endpoint!, secret: r.secret });
            endpoints.reload();
          }}
        />
      </details>
      {created ? (
        <SecretOnce
          title={`Signing secret of ${created.endpoint.url}`}
          secret={created.secret}
          onDone={() => setCreated(undefined)}
        />
      ) : null}
      <ErrorBox error={endpoints.error} />
      {endpoints.loading && endpoints.items.length === 0 ? (
        <Loading />
      ) : endpoints.items.length === 0 && !endpoints.error ? (
        <Empty>
          <p>
            No webhook endpoints yet. Add one above with the URL of your receiver: licensd will POST each change (or
            only the event types you pick) to it, signed with the endpoint's secret.
          </p>
        </Empty>
      ) : (
        <Table
          label="webhook endpoints"
          rows={endpoints.items}
          columns={[
            {
              title: "URL",
              cell: (e) => (
                <a href={href("webhooks", e.id)}>
                  <code>{e.url}</code>
                </a>
              ),
            },
            { title: "Description", cell: (e) => e.description || <span class="muted">—</span> },
            { title: "Events", cell: (e) => (e.eventTypes.length ? e.eventTypes.join(", ") : "all") },
            { title: "Status", cell: (e) => <EndpointStatus endpoint={e} /> },
            { title: "Created", cell: (e) => when(e.createTime) },
          ]}
        />
      )}
      <Pager {...endpoints} />
    </Page>
  );
}

function EndpointStatus({ endpoint: e }: { endpoint: WebhookEndpoint }) {
  if (e.enabled) return <Badge value="enabled" />;
  const reason =
    e.disabledReason === WebhookEndpointDisabledReason.UNSPECIFIED
      ? ""
      : ` (${enumName(WebhookEndpointDisabledReason, e.disabledReason)})`;
  return (
    <span>
      <Badge value="disabled" />
      {reason}
    </span>
  );
}

/** A secret shown once, with a copy button; it is not kept anywhere once dismissed. */
function SecretOnce({ title, secret, onDone }: { title: string; secret: string; onDone: () => void }) {
  return (
    <div class="secret" role="status">
      <span>
        {title} — shown only now, copy it to your receiver: <code data-testid="secret">{secret}</code>
      </span>
      <CopyButton text={secret} label="Copy secret" />
      <button type="button" onClick={onDone}>
        Done
      </button>
    </div>
  );
}

interface EndpointValues {
  url: string;
  description: string;
  eventTypes: string[];
  enabled: boolean;
}

function EndpointForm({
  initial,
  submitLabel,
  onSubmit,
}: {
  initial?: WebhookEndpoint;
  submitLabel: string;
  onSubmit: (v: EndpointValues) => Promise<void>;
}) {
  const [url, setUrl] = useState(initial?.url ?? "");
  const [description, setDescription] = useState(initial?.description ?? "");
  const [types, setTypes] = useState(initial?.eventTypes.join(", ") ?? "");
  const [enabled, setEnabled] = useState(initial?.enabled ?? true);
  const action = useAction();
  const p = initial ? "edit" : "new";
  return (
    <form
      onSubmit={async (e) => {
        e.preventDefault();
        await action.run(() => onSubmit({ url: url.trim(), description, eventTypes: parseTypes(types), enabled }));
      }}
    >
      <Field id={`${p}-url`} label="URL" hint="https (http only in development); it receives a POST per event.">
        <input
          id={`${p}-url`}
          type="url"
          aria-describedby={`${p}-url-hint`}
          required
          value={url}
          placeholder="https://example.com/webhooks/licensd"
          onInput={(e) => setUrl(e.currentTarget.value)}
        />
      </Field>
      <Field id={`${p}-description`} label="Description">
        <input id={`${p}-description`} value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
      </Field>
      <Field
        id={`${p}-types`}
        label="Event types"
        hint="Comma-separated: exact types (license.suspended), prefixes (license.*) or *. Empty for every type."
      >
        <input
          id={`${p}-types`}
          value={types}
          aria-describedby={`${p}-types-hint`}
          onInput={(e) => setTypes(e.currentTarget.value)}
        />
      </Field>
      <div class="field check-field">
        <input
          id={`${p}-enabled`}
          type="checkbox"
          checked={enabled}
          onChange={(e) => setEnabled(e.currentTarget.checked)}
        />
        <label for={`${p}-enabled`}>Enabled</label>
      </div>
      <button type="submit" disabled={action.busy}>
        {submitLabel}
      </button>
      <ErrorBox error={action.error} />
    </form>
  );
}

function EndpointPage({ id }: { id: string }) {
  const { client, tenantId } = useScope();
  const endpoint = useAsync(async () => (await client.webhook.getWebhookEndpoint({ tenantId, id })).endpoint, [id]);
  const [secret, setSecret] = useState<string>();
  const [deleted, setDeleted] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const [overlapHours, setOverlapHours] = useState("24");
  const [deliveriesVersion, setDeliveriesVersion] = useState(0);
  const action = useAction();
  const e = endpoint.data;
  const back = (
    <a href={href("webhooks")} class="back">
      ← All endpoints
    </a>
  );
  if (deleted)
    return (
      <Page title="Webhook endpoint" actions={back}>
        <Empty>
          <p>
            The endpoint was deleted with its delivery history. <a href={href("webhooks")}>Back to the endpoints</a>.
          </p>
        </Empty>
      </Page>
    );
  return (
    <Page title="Webhook endpoint" actions={back}>
      <ErrorBox error={endpoint.error} />
      {!e ? (
        endpoint.loading ? (
          <Loading />
        ) : null
      ) : (
        <>
          <dl class="facts">
            <dt>URL</dt>
            <dd>
              <code>{e.url}</code>
            </dd>
            <dt>Status</dt>
            <dd data-testid="endpoint-status">
              <EndpointStatus endpoint={e} />
              {e.failingSince ? ` failing since ${when(e.failingSince)}` : ""}
            </dd>
            <dt>Events</dt>
            <dd>{e.eventTypes.length ? e.eventTypes.join(", ") : "all"}</dd>
            <dt>Description</dt>
            <dd>{e.description || "—"}</dd>
            <dt>Id</dt>
            <dd>
              <code>{e.id}</code>
            </dd>
            {e.previousSecretExpireTime ? (
              <>
                <dt>Previous secret</dt>
                <dd>also signs until {when(e.previousSecretExpireTime)}</dd>
              </>
            ) : null}
          </dl>
          <div class="actions">
            <button
              type="button"
              class="primary"
              disabled={action.busy}
              onClick={() =>
                action.run(async () => {
                  await client.webhook.sendTestWebhook({ tenantId, endpointId: e.id });
                  setDeliveriesVersion((v) => v + 1);
                })
              }
            >
              Send test
            </button>
            <button
              type="button"
              disabled={action.busy}
              onClick={() =>
                action.run(async () => {
                  await client.webhook.updateWebhookEndpoint({
                    tenantId,
                    id: e.id,
                    enabled: !e.enabled,
                    updateMask: { paths: ["enabled"] },
                  });
                  endpoint.reload();
                })
              }
            >
              {e.enabled ? "Disable" : "Enable"}
            </button>
            {confirming ? (
              <span class="confirm">
                Delete this endpoint and its deliveries?{" "}
                <button
                  type="button"
                  class="danger"
                  disabled={action.busy}
                  onClick={() =>
                    action.run(async () => {
                      await client.webhook.deleteWebhookEndpoint({ tenantId, id: e.id });
                      setDeleted(true);
                    })
                  }
                >
                  Yes, delete
                </button>{" "}
                <button type="button" onClick={() => setConfirming(false)}>
                  Cancel
                </button>
              </span>
            ) : (
              <button type="button" class="danger" onClick={() => setConfirming(true)}>
                Delete
              </button>
            )}
          </div>
          <ErrorBox error={action.error} />
          {secret ? (
            <SecretOnce title="New signing secret" secret={secret} onDone={() => setSecret(undefined)} />
          ) : null}
          <details class="panel">
            <summary>Edit</summary>
            <EndpointForm
              key={e.updateTime?.seconds}
              initial={e}
              submitLabel="Save"
              onSubmit={async (v) => {
                const paths = [
                  v.url !== e.url ? "url" : "",
                  v.description !== e.description ? "description" : "",
                  v.eventTypes.join(",") !== e.eventTypes.join(",") ? "event_types" : "",
                  v.enabled !== e.enabled ? "enabled" : "",
                ].filter((p) => p !== "");
                if (paths.length === 0) return;
                await client.webhook.updateWebhookEndpoint({ tenantId, id: e.id, ...v, updateMask: { paths } });
                endpoint.reload();
              }}
            />
          </details>
          <details class="panel">
            <summary>Rotate secret</summary>
            <form
              class="inline"
              onSubmit={(ev) => {
                ev.preventDefault();
                action.run(async () => {
                  const r = await client.webhook.rotateWebhookSecret({
                    tenantId,
                    id: e.id,
                    overlap: { seconds: BigInt(Number(overlapHours) * 3600) },
                  });
                  setSecret(r.secret);
                  endpoint.reload();
                });
              }}
            >
              <Field id="overlap" label="Old secret keeps signing for">
                <select id="overlap" value={overlapHours} onChange={(ev) => setOverlapHours(ev.currentTarget.value)}>
                  <option value="0">no time (drop it now)</option>
                  <option value="1">1 hour</option>
                  <option value="24">24 hours</option>
                  <option value="72">3 days</option>
                  <option value="168">7 days</option>
                </select>
              </Field>
              <div class="field">
                <button type="submit" disabled={action.busy}>
                  Rotate secret
                </button>
              </div>
            </form>
          </details>
          <Deliveries endpoint={e} version={deliveriesVersion} />
        </>
      )}
    </Page>
  );
}

function Deliveries({ endpoint, version }: { endpoint: WebhookEndpoint; version: number }) {
  const { client, tenantId } = useScope();
  const [status, setStatus] = useState(WebhookDeliveryStatus.UNSPECIFIED);
  const deliveries = usePages(
    async (pageToken) => {
      const r = await client.webhook.listWebhookDeliveries({
        tenantId,
        endpointId: endpoint.id,
        status,
        pageSize: 25,
        pageToken,
      });
      return { items: r.deliveries, next: r.nextPageToken };
    },
    [endpoint.id, status, version],
  );
  return (
    <section aria-labelledby="deliveries-title">
      <div class="page-head">
        <h2 id="deliveries-title">Deliveries</h2>
        <Field id="delivery-status" label="Status">
          <select
            id="delivery-status"
            value={String(status)}
            onChange={(e) => setStatus(Number(e.currentTarget.value) as WebhookDeliveryStatus)}
          >
            <option value={String(WebhookDeliveryStatus.UNSPECIFIED)}>any</option>
            <option value={String(WebhookDeliveryStatus.PENDING)}>pending</option>
            <option value={String(WebhookDeliveryStatus.SUCCEEDED)}>succeeded</option>
            <option value={String(WebhookDeliveryStatus.FAILED)}>failed</option>
          </select>
        </Field>
        <button type="button" onClick={deliveries.reload}>
          Refresh
        </button>
      </div>
      <ErrorBox error={deliveries.error} />
      {deliveries.loading && deliveries.items.length === 0 ? (
        <Loading />
      ) : deliveries.items.length === 0 && !deliveries.error ? (
        <Empty>
          <p>
            No deliveries {status ? "with this status" : "yet"}. Press “Send test” to POST a webhook.test event to this
            endpoint now, or make a change the endpoint subscribes to.
          </p>
        </Empty>
      ) : (
        <ol class="deliveries">
          {deliveries.items.map((d) => (
            <DeliveryItem key={d.id} initial={d} />
          ))}
        </ol>
      )}
      <Pager {...deliveries} />
    </section>
  );
}

function DeliveryItem({ initial }: { initial: WebhookDelivery }) {
  const { client, tenantId } = useScope();
  const [d, setD] = useState(initial);
  const action = useAction();
  const status = enumName(WebhookDeliveryStatus, d.status);
  return (
    <li class="delivery" data-testid="delivery" data-delivery={d.id} aria-label={`delivery ${d.eventType} ${d.id}`}>
      <div class="delivery-head">
        <code>{d.eventType}</code> <Badge value={status} />{" "}
        <span class="muted">
          {d.attemptCount} attempt{d.attemptCount === 1 ? "" : "s"} · {when(d.createTime)}
          {d.nextAttemptTime ? ` · next ${when(d.nextAttemptTime)}` : ""}
        </span>{" "}
        <button
          type="button"
          disabled={action.busy}
          aria-label={`Redeliver ${d.eventType} ${d.id}`}
          onClick={() =>
            action.run(async () => {
              const r = await client.webhook.redeliverWebhook({ tenantId, id: d.id });
              if (r.delivery) setD(r.delivery);
            })
          }
        >
          {action.busy ? "Sending…" : "Redeliver"}
        </button>
      </div>
      <ErrorBox error={action.error} />
      <Table label={`attempts of ${d.id}`} rows={[...d.attempts].reverse()} columns={ATTEMPT_COLUMNS} />
    </li>
  );
}

const ATTEMPT_COLUMNS = [
  { title: "#", cell: (a: WebhookAttempt) => `${a.number}${a.manual ? " (manual)" : ""}` },
  { title: "Sent", cell: (a: WebhookAttempt) => when(a.startTime) },
  {
    title: "HTTP",
    cell: (a: WebhookAttempt) =>
      a.httpStatus ? (
        <span class={a.httpStatus >= 200 && a.httpStatus < 300 ? "http http-ok" : "http http-bad"}>{a.httpStatus}</span>
      ) : (
        <span class="http http-bad">no answer</span>
      ),
  },
  { title: "Latency", cell: (a: WebhookAttempt) => `${ms(a.latency)} ms` },
  {
    title: "Error",
    cell: (a: WebhookAttempt) => (a.error ? `${a.errorReason}: ${a.error}` : <span class="muted">—</span>),
  },
  {
    title: "Response",
    cell: (a: WebhookAttempt) => (a.responseBody ? <code class="body">{a.responseBody}</code> : "—"),
  },
];
