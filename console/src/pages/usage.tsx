import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { License } from "@licensd/client/gen/licensd/licensing/v1/license_pb.js";
import {
  Aggregation,
  LimitPeriod,
  type LimitState,
  type Meter,
} from "@licensd/client/gen/licensd/usage/v1/usage_pb.js";
import { Bucket, SummaryLayout } from "@licensd/client/gen/licensd/usage/v1/usage_service_pb.js";
import { useState } from "preact/hooks";
import { href } from "../router";
import {
  Badge,
  type Column,
  Empty,
  ErrorBox,
  enumName,
  Field,
  Loading,
  Page,
  Pager,
  Table,
  useAsync,
  usePages,
  useScope,
  when,
} from "../ui";
import { UsageChart } from "./usage-chart";
import "./usage.css";

const DAY = 86_400_000;
/** A UTC day as the value of an `<input type="date">`. */
const dateValue = (ms: number) => new Date(ms).toISOString().slice(0, 10);
const dayStart = (value: string) => Date.parse(`${value}T00:00:00Z`);
export const count = (n: bigint) => n.toLocaleString("en-US");

/**
 * Usage of one license: a daily chart of one metric (GetUsageSummary, series layout), the
 * license's quotas (GetQuota) and the tenant's meters, which quotas come from.
 * `#/usage/lic_…` opens it on that license.
 */
export function Usage({ params }: { params: string[] }) {
  const { client, tenantId } = useScope();
  const options = useAsync(async () => {
    const [m, l] = await Promise.all([
      client.usage.listMeters({ tenantId, pageSize: 1000 }),
      client.licensing.listLicenses({ tenantId, pageSize: 1000 }),
    ]);
    return { meters: m.meters, licenses: l.licenses };
  }, [tenantId]);
  const [picked, setLicenseId] = useState(params[0] ?? "");
  const [pickedMetric, setMetric] = useState("");
  const today = dateValue(Date.now());
  const [from, setFrom] = useState(dateValue(Date.now() - 29 * DAY));
  const [to, setTo] = useState(today);
  const [byAgent, setByAgent] = useState(false);

  const licenses = options.data?.licenses ?? [];
  const meters = options.data?.meters ?? [];
  const licenseId = picked || licenses[0]?.id || "";
  const license = licenses.find((l) => l.id === licenseId);
  // Only the meters of the license's product apply to it (all of them until it is known).
  const metrics = meters.filter((m) => !license || m.productId === license.productId).map((m) => m.metric);
  const metric = metrics.includes(pickedMetric) ? pickedMetric : (metrics[0] ?? "");
  const badRange = from === "" || to === "" || dayStart(to) < dayStart(from);

  const summary = useAsync(async () => {
    if (!licenseId || !metric || badRange) return undefined;
    return client.usage.getUsageSummary({
      tenantId,
      licenseId,
      metric,
      startTime: timestampFromDate(new Date(dayStart(from))),
      endTime: timestampFromDate(new Date(dayStart(to) + DAY)),
      bucket: Bucket.DAY,
      groupByAgent: byAgent,
      layout: SummaryLayout.SERIES,
    });
  }, [tenantId, licenseId, metric, from, to, byAgent]);

  if (options.loading && !options.data) return <Page title="Usage">{<Loading />}</Page>;
  return (
    <Page title="Usage">
      <ErrorBox error={options.error} />
      {options.data && licenses.length === 0 ? (
        <Empty>
          <p>
            No licenses yet. Create one under <a href={href("licenses")}>Licenses</a>, define a meter for its product,
            and send usage events (RecordUsage, StreamUsage or <code>licensd usage send</code>) to see charts here.
          </p>
        </Empty>
      ) : (
        <>
          <form class="filters" aria-label="usage filters" onSubmit={(e) => e.preventDefault()}>
            <Field id="usage-license" label="License">
              <LicenseSelect licenses={licenses} value={licenseId} onChange={setLicenseId} />
            </Field>
            <Field id="usage-metric" label="Metric">
              <select id="usage-metric" value={metric} onChange={(e) => setMetric(e.currentTarget.value)}>
                {metrics.map((m) => (
                  <option key={m} value={m}>
                    {m}
                  </option>
                ))}
              </select>
            </Field>
            <Field id="usage-from" label="From (UTC day)">
              <input
                id="usage-from"
                type="date"
                value={from}
                max={to}
                onChange={(e) => setFrom(e.currentTarget.value)}
              />
            </Field>
            <Field id="usage-to" label="To (UTC day, included)">
              <input id="usage-to" type="date" value={to} min={from} onChange={(e) => setTo(e.currentTarget.value)} />
            </Field>
            <div class="field check">
              <input
                id="usage-by-agent"
                type="checkbox"
                checked={byAgent}
                onChange={(e) => setByAgent(e.currentTarget.checked)}
              />
              <label for="usage-by-agent">One line per agent</label>
            </div>
          </form>
          <section aria-labelledby="chart-title">
            <h2 id="chart-title" class="chart-title">
              Daily {metric || "usage"}
              {license ? <span class="muted"> · {license.id}</span> : null}
            </h2>
            {badRange ? (
              <p class="error" role="alert">
                The range ends before it starts: pick a “To” day on or after the “From” day.
              </p>
            ) : null}
            <ErrorBox error={summary.error} />
            {metric === "" ? (
              <Empty>
                <p>
                  This license's product has no meter. Create one (UsageService CreateMeter, or{" "}
                  <code>licensd meter create</code>) and its usage is charted here.
                </p>
              </Empty>
            ) : summary.data && summary.data.bucketStarts.length > 0 ? (
              <UsageChart metric={metric} summary={summary.data} range={[dayStart(from), dayStart(to)]} />
            ) : summary.data ? (
              <Empty>
                <p>
                  No {metric} recorded for this license between {from} and {to}. Widen the range, or check that its
                  agents send usage events with this metric.
                </p>
              </Empty>
            ) : summary.loading ? (
              <Loading />
            ) : null}
          </section>
          {licenseId ? <Quotas licenseId={licenseId} /> : null}
        </>
      )}
      <Meters />
    </Page>
  );
}

function LicenseSelect({
  licenses,
  value,
  onChange,
}: {
  licenses: License[];
  value: string;
  onChange: (id: string) => void;
}) {
  const known = licenses.some((l) => l.id === value);
  return (
    <select id="usage-license" value={value} onChange={(e) => onChange(e.currentTarget.value)}>
      {known || !value ? null : <option value={value}>{value}</option>}
      {licenses.map((l) => (
        <option key={l.id} value={l.id}>
          {l.id} ({l.keyPrefix})
        </option>
      ))}
    </select>
  );
}

/** One bar per limit: used against the entitled limit in the current period. */
function Quotas({ licenseId }: { licenseId: string }) {
  const { client, tenantId } = useScope();
  const quota = useAsync(
    async () => (await client.usage.getQuota({ tenantId, licenseId })).limits,
    [tenantId, licenseId],
  );
  return (
    <section aria-labelledby="quota-title">
      <h2 id="quota-title">Quotas this period</h2>
      <ErrorBox error={quota.error} />
      {quota.data && quota.data.length === 0 ? (
        <Empty>
          <p>
            No meters apply to this license. Quotas come from a meter of its product and a <code>limit</code>{" "}
            entitlement named like the meter's metric on its policy.
          </p>
        </Empty>
      ) : quota.data ? (
        <ul class="quotas">
          {quota.data.map((q) => (
            <QuotaBar key={`${q.metric}:${q.agentId}`} q={q} />
          ))}
        </ul>
      ) : (
        <Loading />
      )}
    </section>
  );
}

function QuotaBar({ q }: { q: LimitState }) {
  const id = `quota-${q.metric}-${q.agentId || "all"}`.replace(/[^A-Za-z0-9_-]/g, "-");
  const name = q.agentId ? `${q.metric} · agent ${q.agentId}` : q.metric;
  const limit = Number(q.limit);
  const used = Number(q.used);
  const pct = limit > 0 ? Math.round((used / limit) * 100) : 0;
  return (
    <li class="quota" data-metric={q.metric} data-agent={q.agentId}>
      <div class="quota-head">
        <label for={id}>{name}</label>
        {q.exceeded ? <Badge value="exceeded" /> : q.warning ? <Badge value="warning" /> : null}
      </div>
      {limit > 0 ? (
        <>
          <meter id={id} min={0} max={limit} value={Math.min(used, limit)} low={limit * 0.8} high={limit} optimum={0}>
            {pct}%
          </meter>
          <p class="quota-text" data-testid={`quota-text-${q.metric}${q.agentId ? `-${q.agentId}` : ""}`}>
            {count(q.used)} of {count(q.limit)} used ({pct}%)
            {q.allowed > q.limit ? `; overage lets up to ${count(q.allowed)} through` : ""}
          </p>
        </>
      ) : (
        <p class="quota-text" id={id} data-testid={`quota-text-${q.metric}${q.agentId ? `-${q.agentId}` : ""}`}>
          {count(q.used)} used; no limit
        </p>
      )}
      <p class="muted quota-period">
        Period {when(q.periodStart)} to {q.periodEnd ? when(q.periodEnd) : "the end of the license's term"}
      </p>
    </li>
  );
}

function Meters() {
  const { client, tenantId } = useScope();
  const list = usePages(
    async (pageToken) => {
      const r = await client.usage.listMeters({ tenantId, pageSize: 50, pageToken });
      return { items: r.meters, next: r.nextPageToken };
    },
    [tenantId],
  );
  const columns: Column<Meter>[] = [
    { title: "Metric", cell: (m) => <code>{m.metric}</code> },
    { title: "Product", cell: (m) => <code>{m.productId}</code> },
    {
      title: "Aggregation",
      cell: (m) => enumName(Aggregation, m.aggregation) + (m.uniqueAttribute ? ` of ${m.uniqueAttribute}` : ""),
    },
    { title: "Limit period", cell: (m) => enumName(LimitPeriod, m.period === 0 ? LimitPeriod.MONTH : m.period) },
    { title: "Agent tokens", cell: (m) => (m.agentTokens ? "yes" : "no") },
    { title: "Description", cell: (m) => m.description || "—" },
  ];
  return (
    <section aria-labelledby="meters-title">
      <h2 id="meters-title">Meters</h2>
      <ErrorBox error={list.error} />
      {list.data && list.items.length === 0 && !list.hasPrevious ? (
        <Empty>
          <p>
            No meters yet. A meter names a metric of a product and how its events add up; create one with UsageService
            CreateMeter (or <code>licensd meter create</code>), then give policies a <code>limit</code> entitlement of
            the same name to set quotas.
          </p>
        </Empty>
      ) : list.data ? (
        <>
          <Table label="meters" columns={columns} rows={list.items} />
          <Pager {...list} />
        </>
      ) : list.loading ? (
        <Loading />
      ) : null}
    </section>
  );
}
