// One eval: its testing criteria and item schema, its runs with their scores (re-read while one is
// unfinished), the scores across the checkpoints of each job it ran on, and a form that runs it on any
// model the key can use.

import { api } from "../api.js";
import {
  announce, definitions, errorBox, errorText, h, number, RUN_ENDED, statusBadge, table, time,
} from "../ui.js";
import { CompletionsSource } from "./eval-source.js";
import { meanScores, scoreRows } from "./job-scores.js";
import { modelChoices } from "./model-choices.js";

const PAGE_SIZE = 20;
const POLL_MS = 3000;

export async function renderEval(main, [evalId], signal) {
  const base = `v1/evals/${evalId}`;
  const [evaluation, choices] = await Promise.all([api.get(base, signal), modelChoices("eval-model-choices", signal)]);
  const remove = h("button", { type: "button", class: "danger" }, "Delete eval");
  const runs = h("div");
  const checkpoints = h("div");
  const problem = h("div");
  const cursors = [null];
  const newer = h("button", { type: "button", class: "secondary", disabled: true }, "← Newer");
  const older = h("button", { type: "button", class: "secondary", disabled: true }, "Older →");
  main.append(
    h("div", { class: "page-head" }, h("h1", { tabindex: -1 }, "Eval ", evaluation.name), h("div", { class: "actions" }, remove)),
    problem,
    definitions({ Id: h("code", {}, evaluation.id), Created: time(evaluation.created_at), "Testing criteria": String(evaluation.testing_criteria.length) }),
    h("section", { "aria-labelledby": "criteria-title" }, h("h2", { id: "criteria-title" }, "Testing criteria"),
      h("ul", { class: "criteria" }, evaluation.testing_criteria.map((c) => h("li", {}, h("strong", {}, c.name), ` (${c.type})`,
        h("details", {}, h("summary", {}, "definition"), h("pre", { class: "json" }, JSON.stringify(c, null, 2)))))),
      h("details", {}, h("summary", {}, "Item schema"), h("pre", { class: "json" }, JSON.stringify(evaluation.data_source_config.schema, null, 2)))),
    h("section", { "aria-labelledby": "runs-title" }, h("h2", { id: "runs-title" }, "Runs"), runs,
      h("nav", { class: "pager", "aria-label": "Pages of runs" }, newer, older)),
    h("section", { "aria-labelledby": "checkpoint-scores-title" },
      h("h2", { id: "checkpoint-scores-title" }, "Scores across checkpoints"), checkpoints),
    h("section", { "aria-labelledby": "new-run-title" }, h("h2", { id: "new-run-title" }, "Run it"), runForm(base, choices, signal, () => load())));

  let timer = null;
  async function load() {
    clearTimeout(timer);
    const params = new URLSearchParams({ limit: PAGE_SIZE, order: "desc" });
    if (cursors.at(-1)) params.set("after", cursors.at(-1));
    try {
      const page = await api.get(`${base}/runs?${params}`, signal);
      runs.replaceChildren(table("Runs of this eval, newest first", ["Run", "Model", "Status", "Passed", "Mean scores", "Created"],
        page.data.map(runRow), "No runs yet: run it below, or on every checkpoint of a job from the job's page."));
      newer.disabled = cursors.length === 1;
      older.disabled = !page.has_more;
      older.onclick = () => {
        cursors.push(page.last_id);
        load();
      };
      checkpoints.replaceChildren(await checkpointScores(evaluation, page.data, signal));
      if (page.data.some((run) => !RUN_ENDED.includes(run.status))) timer = setTimeout(load, POLL_MS);
    } catch (error) {
      if (!signal.aborted) problem.replaceChildren(errorBox(error));
    }
  }
  newer.addEventListener("click", () => {
    cursors.pop();
    load();
  });
  remove.addEventListener("click", async () => {
    if (!window.confirm(`Delete the eval ${evaluation.name} with its runs and their results? A run in progress stops.`)) return;
    try {
      await api.delete(base);
      announce(`Deleted the eval ${evaluation.name}`);
      location.hash = "#/evals";
    } catch (error) {
      problem.replaceChildren(errorBox(error));
    }
  });
  signal.addEventListener("abort", () => clearTimeout(timer));
  await load();
}

function runRow(run) {
  const { passed, failed, total } = run.result_counts;
  return h("tr", {},
    h("td", {}, h("a", { href: `#/evals/${run.eval_id}/runs/${run.id}` }, run.name), h("div", { class: "hint" }, h("code", {}, run.id))),
    h("td", {}, run.model ? h("code", {}, run.model) : "— (samples given)", run.fine_tuning_job_id ? h("div", { class: "hint" }, "step ", String(run.step)) : null),
    h("td", {}, statusBadge(run.status)),
    h("td", {}, `${passed}/${total}`, failed ? h("div", {}, h("a", { href: `#/evals/${run.eval_id}/runs/${run.id}?status=fail` }, `${failed} failed`)) : null),
    h("td", {}, meanScores(run)),
    h("td", {}, time(run.created_at)));
}

// For each job among these runs: every run of this eval on its checkpoints and final model (read from
// the job's eval runs), a row per step with each criterion's mean score.
async function checkpointScores(evaluation, runs, signal) {
  const jobs = [...new Set(runs.map((run) => run.fine_tuning_job_id).filter(Boolean))];
  if (!jobs.length) return h("p", { class: "empty" }, "This eval has not run on a job's checkpoints yet: the job page's Eval scores do that in one click.");
  const criteria = evaluation.testing_criteria.map((c) => c.name);
  const perJob = await Promise.all(jobs.map(async (job) => {
    const heading = h("h3", {}, "Job ", h("a", { href: `#/jobs/${job}` }, job));
    try {
      const found = (await api.get(`v1/fine_tuning/jobs/${job}/evals`, signal)).data.filter((run) => run.eval_id === evaluation.id);
      const rows = scoreRows(found).map((row) => h("tr", {}, h("td", {}, String(row.step)),
        criteria.map((name) => h("td", {}, number(row[`${evaluation.id} ${name}`])))));
      return h("div", { class: "job-scores" }, heading,
        table(`Mean scores of ${job}'s checkpoints`, ["Step", ...criteria], rows, "No completed run on this job yet."));
    } catch (error) {
      if (signal.aborted) throw error;
      return h("div", { class: "job-scores" }, heading, errorBox(error)); // e.g. the job was deleted since
    }
  }));
  return h("div", {}, perJob);
}

function runForm(base, choices, signal, done) {
  const model = h("input", { id: "run-model", name: "model", list: choices.id, required: true, autocomplete: "off", spellcheck: "false" });
  const name = h("input", { id: "run-name", name: "name", maxlength: 256 });
  const source = new CompletionsSource("run");
  const button = h("button", { type: "submit" }, "Start run");
  const problem = h("div");
  const form = h("form", { class: "card", "aria-label": "Run this eval on a model" }, choices,
    h("div", { class: "grid" },
      h("div", { class: "field" }, h("label", { for: "run-model" }, "Model"), model,
        h("p", { class: "hint" }, "a catalogue model, a fine-tuned model or a checkpoint")),
      h("div", { class: "field" }, h("label", { for: "run-name" }, "Run name (optional)"), name)),
    source.fields, problem, button);
  source.load(signal).catch((error) => problem.replaceChildren(errorBox(error)));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    button.disabled = true;
    try {
      const run = await api.post(`${base}/runs`, { ...(name.value ? { name: name.value } : {}), data_source: source.dataSource(model.value.trim()) });
      announce(`Run ${run.id} queued on ${run.model}.`);
      done();
    } catch (error) {
      announce(errorText(error));
      problem.replaceChildren(errorBox(error));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}
