import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { GetUsageSummaryResponse } from "@licensd/client/gen/licensd/usage/v1/usage_service_pb.js";
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

const COLORS = ["#2456c6", "#137333", "#b3261e", "#8a5a00", "#6a1b9a", "#00796b"];
const HEIGHT = 240;
const DAY_S = 86_400;
/** A bucket start (seconds) as its UTC day. */
const utcDay = (s: number) => new Date(s * 1000).toISOString().slice(0, 10);

/**
 * GetUsageSummary's series layout drawn by uPlot: `bucket_starts` is the x column, each
 * series (one, or one per agent) a y column, so the response maps onto uPlot's data as is.
 * The chart follows its container's width (a ResizeObserver), down to a phone's.
 */
export function UsageChart({
  metric,
  summary,
  range,
}: {
  metric: string;
  summary: GetUsageSummaryResponse;
  /** The days asked for, as [first day's start, last day's start] in ms: the x axis spans them. */
  range: [number, number];
}) {
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
        scales: {
          x: { time: true, range: () => [range[0] / 1000, range[1] / 1000] },
          y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] },
        },
        // Daily buckets are UTC days: whole days on the axis and in the legend.
        axes: [
          {
            incrs: [DAY_S, 2 * DAY_S, 7 * DAY_S, 14 * DAY_S, 30 * DAY_S, 91 * DAY_S, 365 * DAY_S],
            values: (_u, splits) => splits.map((s) => utcDay(s).slice(5)),
            space: 48,
          },
          {},
        ],
        series: [
          { label: "Day", value: (_u, v) => (v === null ? "--" : utcDay(v)) },
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
  }, [metric, summary, range[0], range[1]]);
  return (
    <figure class="usage-chart" aria-label={`Daily ${metric}`}>
      <div ref={box} class="chart" data-testid="usage-chart" />
      <figcaption class="muted">
        Total over the range: <strong data-testid="usage-total">{summary.total.toLocaleString("en-US")}</strong>
      </figcaption>
    </figure>
  );
}
