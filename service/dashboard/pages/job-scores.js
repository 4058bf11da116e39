// A job's eval scores beside its loss curve: each testing criterion's mean score at each checkpoint
// (and the final model) from GET .../evals, and a form that runs an eval on every checkpoint the job
// keeps and its final model at once (POST .../evals). Re-read while any of those runs is unfinished.

import { api } from "../api.js";
import { StepChart } from "../chart.js";
import { announce, errorBox, h, number, RUN_ENDED, table } from "../ui.js";
import { CompletionsSource } from "./eval-source.js";

const POLL_MS = 3000;
const COLORS = ["#1f5fbf", "#c2410c", "#15803d", "#6d28d9", "#b91c1c", "#0e7490"];

export function scoresSection(base, signal) {
  const chartHolder = h("div", { class: "charts" });
  const runs = h("div");
  const problem = h("div");
  const form = runForm(base, problem, () => refresh());
  const section = h("section", { "aria-labelledby": "scores-title" },
    h("h2", { id: "scores-title" }, "Eval scores"), chartHolder, runs, form, problem);
  let chart = null;
  let timer = null;

  async function refresh() {
    clearTimeout(timer);
    try {
      const found = (await api.get(`${base}/evals`, signal)).data;
      const rows = scoreRows(found);
      const criteria = [...new Set(found.flatMap((run) => run.per_testing_criteria_scores.map((c) => `${run.eval_id} ${c.testing_criteria}`)))];
      if (!chart || chart.series.length !== criteria.length) {
        chart?.stop();
        chart = new StepChart("Mean score", criteria.map((key, i) => ({ key, label: key.split(" ").slice(1).join(" "), color: COLORS[i % COLORS.length], pointsOnly: true })));
        chartHolder.replaceChildren(chart.element);
        chart.start();
      }
      chart.update(rows);
      runs.replaceChildren(table("Eval runs on this job's checkpoints", ["Step", "Model", "Status", "Passed", "Scores"],
        found.map((run) => h("tr", {}, h("td", {}, String(run.step ?? "—")), h("td", {}, h("code", {}, run.model)),
          h("td", {}, run.status), h("td", {}, `${run.result_counts.passed}/${run.result_counts.total}`),
          h("td", {}, meanScores(run)))),
        "No eval has run on this job yet."));
      if (found.some((run) => !RUN_ENDED.includes(run.status))) timer = setTimeout(refresh, POLL_MS);
    } catch (error) {
      if (!signal.aborted) problem.replaceChildren(errorBox(error));
    }
  }

  signal.addEventListener("abort", () => {
    clearTimeout(timer);
    chart?.stop();
  });
  refresh();
  return section;
}

// "criterion score, ..." of a run: each testing criterion's mean score over the items graded.
export function meanScores(run) {
  return run.per_testing_criteria_scores.map((c) => `${c.testing_criteria} ${number(c.mean_score)}`).join(", ") || "—";
}

// One row per step: each criterion's mean score there, keyed "<eval id> <criterion>" (completed runs).
export function scoreRows(runs) {
  const steps = new Map();
  for (const run of runs) {
    if (run.step === null || run.status !== "completed") continue;
    const row = steps.get(run.step) ?? { step: run.step };
    for (const c of run.per_testing_criteria_scores) row[`${run.eval_id} ${c.testing_criteria}`] = c.mean_score;
    steps.set(run.step, row);
  }
  return [...steps.values()].sort((a, b) => a.step - b.step);
}

function runForm(base, problem, done) {
  const evalChoice = h("select", { id: "score-eval", name: "eval", required: true });
  const source = new CompletionsSource("score");
  const button = h("button", { type: "submit", disabled: true }, "Evaluate every checkpoint"); // until the evals are listed
  const form = h("form", { class: "card", "aria-label": "Run an eval on every checkpoint" },
    h("div", { class: "field" }, h("label", { for: "score-eval" }, "Eval"), evalChoice),
    source.fields,
    button);
  Promise.all([api.get("v1/evals?limit=100"), source.load()]).then(([evals]) => {
    evalChoice.replaceChildren(...evals.data.map((e) => h("option", { value: e.id }, `${e.name} (${e.id})`)));
    button.disabled = !evals.data.length;
  }).catch((error) => problem.replaceChildren(errorBox(error)));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    button.disabled = true;
    try {
      const created = await api.post(`${base}/evals`, { eval_id: evalChoice.value, data_source: source.dataSource() });
      announce(`${created.data.length} eval runs queued, one per checkpoint and the final model.`);
      done();
    } catch (error) {
      problem.replaceChildren(errorBox(error));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}
