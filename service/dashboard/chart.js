// Metric charts against the step, drawn with uPlot (vendor/uplot, MIT, from the npm package):
// a small (50 KB), well-kept canvas library that redraws thousands of points at once and has a
// cursor legend with every value, so a long run stays smooth while live points arrive; hand-drawn
// SVG would need all of that written here. A canvas says nothing to a screen reader, so each chart
// carries a text summary of its latest values.

import { chartsFor, metricNames } from "./metric-families.js";
import { h, number } from "./ui.js";

/* global uPlot */
const HEIGHT = 220;

export class StepChart {
  // series: [{key, label, color, dash?, pointsOnly?, spread?}]; `spread` names the metric of a
  // series' standard deviation, drawn as a band from mean - spread to mean + spread
  constructor(title, series) {
    this.title = title;
    this.series = series;
    this.lines = series.flatMap((s) => [
      { ...s, value: (row) => row[s.key] },
      ...(s.spread ? [-1, 1].map((sign) => ({
        label: `${s.label} ${sign < 0 ? "−" : "+"} std`, color: `${s.color}66`, edge: true,
        value: (row) => (typeof row[s.key] === "number" && typeof row[s.spread] === "number" ? row[s.key] + sign * row[s.spread] : null),
      })) : []),
    ]);
    this.count = h("span", { class: "count" }, "no points yet");
    this.area = h("div", { class: "plot", role: "img", "aria-label": `${title}: no points yet` });
    this.element = h("figure", { class: "chart", "data-title": title }, h("figcaption", {}, h("strong", {}, title), " · ", this.count), this.area);
    this.rows = [];
  }

  // Called once the figure is in the document, so that its width is known.
  start() {
    const bands = this.lines.flatMap((line, i) => (line.spread ? [{ series: [i + 3, i + 2], fill: `${line.color}22` }] : []));
    const options = {
      width: this.area.clientWidth || 320,
      height: HEIGHT,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, { size: 70, values: tickLabels }],
      bands,
      series: [
        { label: "step" },
        ...this.lines.map((s) => ({
          label: s.label, stroke: s.color, width: s.edge ? 1 : 2, dash: s.dash, spanGaps: true, value: (_, v) => number(v),
          points: { show: s.pointsOnly ? true : s.edge ? false : undefined, size: 7, fill: s.color },
        })),
      ],
    };
    this.plot = new uPlot(options, this.data(), this.area);
    this.resizer = new ResizeObserver(() => this.plot.setSize({ width: this.area.clientWidth, height: HEIGHT }));
    this.resizer.observe(this.area);
  }

  stop() {
    this.resizer?.disconnect();
    this.plot?.destroy();
  }

  data() {
    return [this.rows.map((row) => row.step), ...this.lines.map((line) => this.rows.map((row) => line.value(row) ?? null))];
  }

  // rows: every step's metrics, sorted by step; a series without a value at a step gets a gap there
  update(rows) {
    this.rows = rows.filter((row) => this.series.some((s) => typeof row[s.key] === "number"));
    this.plot?.setData(this.data());
    const last = this.rows.at(-1);
    this.count.textContent = this.rows.length ? `${this.rows.length} steps plotted` : "no points yet";
    if (!last) return;
    const latest = this.series.map((s) => {
      const row = this.rows.findLast((r) => typeof r[s.key] === "number");
      const spread = s.spread && typeof row?.[s.spread] === "number" ? ` ± ${number(row[s.spread])}` : "";
      return row ? `${s.label} ${number(row[s.key])}${spread} at step ${row.step}` : null;
    });
    this.area.setAttribute("aria-label", `${this.title} against step, ${this.rows.length} steps: ${latest.filter(Boolean).join(", ")}`);
  }
}

// The charts of a job's metrics, one per family found in them (metric-families.js); a family whose
// series change (a validation metric arrives) is drawn anew.
export class MetricCharts {
  constructor() {
    this.charts = new Map(); // title -> StepChart
    this.element = h("div", { class: "charts" }, h("p", { class: "empty" }, "No metrics yet."));
  }

  update(rows) {
    const wanted = chartsFor(metricNames(rows));
    if (!wanted.length) return;
    const charts = wanted.map(({ title, series }) => {
      const shown = this.charts.get(title);
      if (shown && JSON.stringify(shown.series) === JSON.stringify(series)) return shown;
      shown?.stop();
      const chart = new StepChart(title, series);
      this.charts.set(title, chart);
      return chart;
    });
    const fresh = charts.filter((chart) => !chart.plot);
    if (fresh.length || this.element.children.length !== charts.length) this.element.replaceChildren(...charts.map((chart) => chart.element));
    fresh.forEach((chart) => chart.start());
    charts.forEach((chart) => chart.update(rows));
  }

  stop() {
    this.charts.forEach((chart) => chart.stop());
  }
}

// As many decimals as the spacing of the ticks needs (uPlot's default stops at 3: a learning rate of
// 2e-4 would read 0); exponents for very small spacings.
function tickLabels(_plot, ticks, _axis, _space, increment) {
  const decimals = Math.max(0, -Math.floor(Math.log10(increment)));
  return ticks.map((tick) => (decimals > 4 ? tick.toExponential(1) : tick.toFixed(decimals)));
}
