// SVG charts for BENCHMARKS.md, drawn by Vega-Lite (compiled to Vega and rendered to SVG
// headless: no browser, no canvas), so a chart is a file the Markdown links to.
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";

export const CHARTS = path.resolve(import.meta.dirname, "charts");

export interface Point {
  x: number;
  y: number;
  series: string;
}

const THEME = { font: "Helvetica, Arial, sans-serif", background: "white" };

/** Writes `spec` as bench/charts/<name>.svg; returns the path BENCHMARKS.md links (relative to the repo root). */
export async function writeChart(name: string, spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile({ config: THEME, ...spec } as TopLevelSpec).spec), {
    renderer: "none",
  });
  const svg = await view.toSVG();
  view.finalize();
  mkdirSync(CHARTS, { recursive: true });
  writeFileSync(path.join(CHARTS, `${name}.svg`), `${svg}\n`);
  return `bench/charts/${name}.svg`;
}

/** Lines with points: y against x (x on a log-2 scale when `log2x`), one line per series. */
export function lineChart(opts: {
  title: string;
  x: string;
  y: string;
  points: Point[];
  log2x?: boolean;
}): TopLevelSpec {
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: opts.title,
    width: 520,
    height: 280,
    data: { values: opts.points },
    mark: { type: "line", point: true },
    encoding: {
      x: {
        field: "x",
        type: "quantitative",
        title: opts.x,
        scale: opts.log2x ? { type: "log", base: 2 } : { zero: false },
        axis: opts.log2x ? { values: [...new Set(opts.points.map((p) => p.x))] } : {},
      },
      y: { field: "y", type: "quantitative", title: opts.y, scale: { zero: true } },
      color: {
        field: "series",
        type: "nominal",
        title: null,
        legend: { orient: "bottom", columns: 2, labelLimit: 400 },
      },
    },
  } as TopLevelSpec;
}

/** Grouped bars: one group per `x` label, one bar per series. */
export function barChart(opts: {
  title: string;
  x: string;
  y: string;
  bars: { x: string; y: number; series: string }[];
}): TopLevelSpec {
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: opts.title,
    width: 520,
    height: 260,
    data: { values: opts.bars },
    mark: { type: "bar" },
    encoding: {
      x: { field: "x", type: "nominal", title: opts.x, axis: { labelAngle: 0 } },
      xOffset: { field: "series", type: "nominal" },
      y: { field: "y", type: "quantitative", title: opts.y },
      color: { field: "series", type: "nominal", title: null, legend: { orient: "bottom", labelLimit: 400 } },
    },
  } as TopLevelSpec;
}
