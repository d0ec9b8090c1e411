import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { GetUsageSummaryResponse } from "@licensd/client/gen/licensd/usage/v1/usage_service_pb.js";
import { Bucket, SummaryLayout } from "@licensd/client/gen/licensd/usage/v1/usage_service_pb.js";
import { useEffect, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { Empty, ErrorBox, Field, Loading, useAsync, useScope } from "../ui";

const DAY_MS = 86_400_000;

/**
 * A license's daily usage of one of its product's meters over the last 30 days, from
 * GetUsageSummary's series layout (bucket starts plus one column of values), which is
 * the shape uPlot plots.
 */
export function LicenseUsage({ licenseId, productId }: { licenseId: string; productId: string }) {
  const { client, tenantId } = useScope();
  const meters = useAsync(
    async () => (await client.usage.listMeters({ tenantId, productId, pageSize: 1000 })).meters,
    [tenantId, productId],
  );
  const [metric, setMetric] = useState("");
  const chosen = metric || meters.data?.[0]?.metric || "";
  const summary = useAsync(async () => {
    if (!chosen) return undefined;
    const end = new Date(Math.ceil(Date.now() / DAY_MS) * DAY_MS);
    const start = new Date(end.getTime() - 30 * DAY_MS);
    const response = await client.usage.getUsageSummary({
      tenantId,
      licenseId,
      metric: chosen,
      startTime: timestampFromDate(start),
      endTime: timestampFromDate(end),
      bucket: Bucket.DAY,
      layout: SummaryLayout.SERIES,
    });
    return { response, range: [start.getTime() / 1000, end.getTime() / 1000] as [number, number] };
  }, [tenantId, licenseId, chosen]);
  return (
    <section aria-labelledby="usage-title">
      <h2 id="usage-title">Usage, last 30 days</h2>
      <ErrorBox error={meters.error} />
      {meters.data && meters.data.length === 0 ? (
        <Empty>
          <p>
            This product has no meters, so there is no usage to chart. Add a meter to the product (UsageService
            CreateMeter), then record usage against this license.
          </p>
        </Empty>
      ) : null}
      {meters.data && meters.data.length > 0 ? (
        <Field id="usage-metric" label="Metric">
          <select id="usage-metric" value={chosen} onChange={(e) => setMetric(e.currentTarget.value)}>
            {meters.data.map((m) => (
              <option key={m.id} value={m.metric}>
                {m.metric}
              </option>
            ))}
          </select>
        </Field>
      ) : null}
      <ErrorBox error={summary.error} />
      {summary.loading && chosen ? <Loading /> : null}
      {summary.data ? (
        summary.data.response.bucketStarts.length === 0 ? (
          <Empty>
            <p>
              No {chosen} recorded for this license in the last 30 days. Usage appears here once the SDK (or
              RecordUsage) reports it.
            </p>
          </Empty>
        ) : (
          <>
            <p>
              Total: <strong data-testid="usage-total">{summary.data.response.total.toString()}</strong>
            </p>
            <UsagePlot summary={summary.data.response} range={summary.data.range} metric={chosen} />
          </>
        )
      ) : null}
    </section>
  );
}

/** The x axis spans the whole range asked for (seconds), so one day of usage sits in its place. */
function UsagePlot({
  summary,
  range,
  metric,
}: {
  summary: GetUsageSummaryResponse;
  range: [number, number];
  metric: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const xs = summary.bucketStarts.map((t) => timestampDate(t).getTime() / 1000);
    const series = summary.series;
    const data: uPlot.AlignedData = [xs, ...series.map((s) => s.values.map(Number))];
    const size = () => ({ width: Math.max(240, el.clientWidth), height: 220 });
    const plot = new uPlot(
      {
        ...size(),
        title: `${metric} per day`,
        series: [
          {},
          ...series.map((s) => ({
            label: s.agentId || metric,
            stroke: "#2456c6",
            fill: "rgba(36, 86, 198, 0.12)",
            points: { show: true },
          })),
        ],
        scales: { x: { time: true, range: () => range } },
        axes: [{}, { size: 60 }],
      },
      data,
      el,
    );
    const resize = new ResizeObserver(() => plot.setSize(size()));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [summary, range, metric]);
  return <div class="usage-plot" ref={box} role="img" aria-label={`${metric} per day, total ${summary.total}`} />;
}
