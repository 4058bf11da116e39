// Metric charts against the step, drawn with uPlot (vendor/uplot, MIT, from the npm package):
// a small (50 KB), well-kept canvas library that redraws thousands of points at once and has a
// cursor legend with every value, so a long run stays smooth while live points arrive; hand-drawn
// SVG would need all of that written here. A canvas says nothing to a screen reader, so each chart
// carries a text summary of its latest values.

import { h, number } from "./ui.js";

/* global uPlot */
const HEIGHT = 220;

export class StepChart {
  // series: [{key, label, color, dash?, pointsOnly?}]
  constructor(title, series) {
    this.title = title;
    this.series = series;
    this.count = h("span", { class: "count" }, "no points yet");
    this.area = h("div", { class: "plot", role: "img", "aria-label": `${title}: no points yet` });
    this.element = h("figure", { class: "chart" }, h("figcaption", {}, h("strong", {}, title), " · ", this.count), this.area);
    this.rows = [];
  }

  // Called once the figure is in the document, so that its width is known.
  start() {
    const options = {
      width: this.area.clientWidth || 320,
      height: HEIGHT,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, { size: 70, values: tickLabels }],
      series: [
        { label: "step" },
        ...this.series.map((s) => ({
          label: s.label, stroke: s.color, width: 2, dash: s.dash, spanGaps: true, value: (_, v) => number(v),
          points: { show: s.pointsOnly ? true : undefined, size: 7, fill: s.color },
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
    return [this.rows.map((row) => row.step), ...this.series.map((s) => this.rows.map((row) => row[s.key] ?? null))];
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
      return row ? `${s.label} ${number(row[s.key])} at step ${row.step}` : null;
    });
    this.area.setAttribute("aria-label", `${this.title} against step, ${this.rows.length} steps: ${latest.filter(Boolean).join(", ")}`);
  }
}

// As many decimals as the spacing of the ticks needs (uPlot's default stops at 3: a learning rate of
// 2e-4 would read 0); exponents for very small spacings.
function tickLabels(_plot, ticks, _axis, _space, increment) {
  const decimals = Math.max(0, -Math.floor(Math.log10(increment)));
  return ticks.map((tick) => (decimals > 4 ? tick.toExponential(1) : tick.toFixed(decimals)));
}

export const LOSS_SERIES = [
  { key: "train_loss", label: "train", color: "#1f5fbf" },
  { key: "valid_loss", label: "valid", color: "#c2410c" },
  { key: "full_valid_loss", label: "full valid", color: "#15803d", dash: [6, 4], pointsOnly: true },
];
export const ACCURACY_SERIES = [
  { key: "train_mean_token_accuracy", label: "train", color: "#1f5fbf" },
  { key: "valid_mean_token_accuracy", label: "valid", color: "#c2410c" },
  { key: "full_valid_mean_token_accuracy", label: "full valid", color: "#15803d", dash: [6, 4], pointsOnly: true },
];
// DPO (method "dpo"): the rewards of the preferred and the other answer, their margin, and how often
// the preferred one is ahead (docs/api.md names the metrics)
export const REWARD_SERIES = [
  { key: "train_rewards_chosen", label: "chosen", color: "#15803d" },
  { key: "train_rewards_rejected", label: "rejected", color: "#b91c1c" },
  { key: "train_rewards_margin", label: "margin", color: "#1f5fbf" },
  { key: "valid_rewards_margin", label: "valid margin", color: "#c2410c" },
];
export const PREFERENCE_ACCURACY_SERIES = [
  { key: "train_preference_accuracy", label: "train", color: "#1f5fbf" },
  { key: "valid_preference_accuracy", label: "valid", color: "#c2410c" },
  { key: "full_valid_preference_accuracy", label: "full valid", color: "#15803d", dash: [6, 4], pointsOnly: true },
];
export const LEARNING_RATE_SERIES = [{ key: "learning_rate", label: "learning rate", color: "#6d28d9" }];
