import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { GetUsageSummaryResponse } from "@licensd/client/gen/licensd/usage/v1/usage_service_pb.js";
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

const COLORS = ["#2456c6", "#137333", "#b3261e", "#8a5a00", "#6a1b9a", "#00796b"];
const HEIGHT = 240;

/**
 * GetUsageSummary's series layout drawn by uPlot: `bucket_starts` is the x column, each
 * series (one, or one per agent) a y column, so the response maps onto uPlot's data as is.
 * The chart follows its container's width (a ResizeObserver), down to a phone's.
 */
export function UsageChart({ metric, summary }: { metric: string; summary: GetUsageSummaryResponse }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const xs = summary.bucketStarts.map((t) => timestampMs(t) / 1000);
    const data: uPlot.AlignedData = [xs, ...summary.series.map((s) => s.values.map(Number))];
    const plot = new uPlot(
      {
        width: Math.max(200, el.clientWidth),
        height: HEIGHT,
        // Daily buckets: the x axis shows dates in UTC, as the buckets are UTC days.
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
        series: [
          { label: "Day" },
          ...summary.series.map((s, i) => ({
            label: s.agentId ? `${metric} · ${s.agentId}` : metric,
            stroke: COLORS[i % COLORS.length],
            width: 2,
            points: { show: true, size: 6 },
          })),
        ],
      },
      data,
      el,
    );
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(200, el.clientWidth), height: HEIGHT }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [metric, summary]);
  return (
    <figure class="usage-chart" aria-label={`Daily ${metric}`}>
      <div ref={box} class="chart" data-testid="usage-chart" />
      <figcaption class="muted">
        Total over the range: <strong data-testid="usage-total">{summary.total.toLocaleString("en-US")}</strong>
      </figcaption>
    </figure>
  );
}
