// Which charts a job's metrics make. A metric's name is a split (train_, valid_, full_valid_, or none)
// and a measure ("loss", "reward_mean", "eval_exact"); a family is one chart, drawing every split of
// the measures it names or matches. The job page asks which names its metric rows hold and draws the
// families found, so that any method's metrics (supervised, DPO, reinforcement) and an eval's scores
// chart alike, and a new metric needs a line here rather than a chart of its own. No DOM here: the
// fast tests run it in Node.

const SPLITS = [["full_valid_", "full valid"], ["valid_", "valid"], ["train_", "train"], ["", ""]];
// one measure: the split's colour (the full validation set is measured at epoch ends: points only)
const SPLIT_STYLES = {
  train_: { color: "#1f5fbf" },
  valid_: { color: "#c2410c" },
  full_valid_: { color: "#15803d", dash: [6, 4], pointsOnly: true },
  "": { color: "#6d28d9" },
};
// several measures: a colour each, the split told by its line where there are several
const PALETTE = ["#1f5fbf", "#b91c1c", "#15803d", "#6d28d9", "#c2410c", "#0e7490", "#a16207", "#be185d"];
const SPLIT_DASHES = { train_: undefined, "": undefined, valid_: [6, 4], full_valid_: [2, 3] };

// measures: [measure, label] in the order drawn; match: a pattern whose first group is the label;
// spread: measure -> the measure of its standard deviation, drawn as a band around it
export const FAMILIES = [
  { title: "Loss", measures: [["loss", "loss"]] },
  { title: "Token accuracy", measures: [["mean_token_accuracy", "token accuracy"]] },
  // DPO (docs/api.md): the preferred and the other answer's rewards, their margin, how often it is ahead
  { title: "Rewards", measures: [["rewards_chosen", "chosen"], ["rewards_rejected", "rejected"], ["rewards_margin", "margin"]] },
  { title: "Preference accuracy", measures: [["preference_accuracy", "preference accuracy"]] },
  // reinforcement (docs/rft.md): the graded reward's mean with its spread, and each sub-grader's mean
  { title: "Reward", measures: [["reward_mean", "reward"]], spread: { reward_mean: "reward_std" } },
  { title: "Reward by grader", match: /^reward_(.+)_mean$/ },
  { title: "KL to the starting model", measures: [["kl", "KL"]] },
  { title: "Answer length (tokens)", measures: [["completion_length", "mean length"]] },
  { title: "Clipped tokens and cut answers", measures: [["clip_ratio", "clipped tokens"], ["truncated_ratio", "cut answers"]] },
  // training.eval_id (docs/evals.md): each testing criterion's mean score and the pass rate
  { title: "Eval scores during training", match: /^eval_(.+)$/ },
  { title: "Learning rate", measures: [["learning_rate", "learning rate"]] },
];

export function splitName(key) {
  const [prefix, label] = SPLITS.find(([p]) => key.startsWith(p));
  return { prefix, splitLabel: label, measure: key.slice(prefix.length) };
}

// The charts for these metric names (any order): [{title, series: [{key, label, color, dash?,
// pointsOnly?, spread?}]}], in FAMILIES' order, each series once, none for a family without metrics.
export function chartsFor(keys) {
  const named = [...new Set(keys)].map((key) => ({ key, ...splitName(key) }));
  return FAMILIES.map((family) => ({ title: family.title, series: familySeries(family, named, new Set(keys)) }))
    .filter((chart) => chart.series.length);
}

function familySeries(family, named, keys) {
  const found = [];
  for (const metric of named) {
    const listed = family.measures?.findIndex(([measure]) => measure === metric.measure) ?? -1;
    const matched = family.match?.exec(metric.measure);
    if (listed >= 0) found.push({ ...metric, order: listed, label: family.measures[listed][1] });
    else if (matched) found.push({ ...metric, order: Infinity, label: matched[1].replaceAll("_", " ") });
  }
  const order = (metric) => SPLITS.findIndex(([p]) => p === metric.prefix);
  found.sort((a, b) => a.order - b.order || a.label.localeCompare(b.label) || order(b) - order(a));
  const measures = [...new Set(found.map((metric) => metric.measure))];
  const splits = new Set(found.map((metric) => metric.prefix));
  return found.map((metric) => {
    const several = measures.length > 1;
    const label = [splits.size > 1 || !several ? metric.splitLabel : "", several ? metric.label : ""].filter(Boolean).join(" ");
    const style = several
      ? { color: PALETTE[measures.indexOf(metric.measure) % PALETTE.length], dash: splits.size > 1 ? SPLIT_DASHES[metric.prefix] : undefined, pointsOnly: SPLIT_STYLES[metric.prefix].pointsOnly }
      : SPLIT_STYLES[metric.prefix];
    const spread = family.spread?.[metric.measure] && metric.prefix + family.spread[metric.measure];
    return { key: metric.key, label: label || metric.label, ...style, ...(spread && keys.has(spread) ? { spread } : {}) };
  });
}

// Every metric name of these rows that holds a number somewhere.
export function metricNames(rows) {
  const names = new Set();
  for (const row of rows) for (const [key, value] of Object.entries(row)) if (typeof value === "number") names.add(key);
  return [...names];
}
