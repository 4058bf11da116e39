// One eval run (the run objects' report_url): its status and counts, each criterion's results, the
// tokens used, and its output items: each item with the model's answer and each grade, filtered to
// the failures or the passes (#/evals/<id>/runs/<run id>?status=fail), paged, re-read while it runs.

import { api } from "../api.js";
import {
  announce, definitions, errorBox, errorText, h, number, RUN_ENDED, statusBadge, table, time,
} from "../ui.js";

const PAGE_SIZE = 20;
const POLL_MS = 2000;
const SHOWN = { "": "all items", fail: "failures", pass: "passes" };

export async function renderEvalRun(main, [evalId, runId, query], signal) {
  const base = `v1/evals/${evalId}/runs/${runId}`;
  const status = new URLSearchParams(query ?? "").get("status") ?? "";
  const [run, evaluation] = await Promise.all([api.get(base, signal), api.get(`v1/evals/${evalId}`, signal)]);
  const heading = h("h1", { tabindex: -1 }, "Run ", run.name);
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  const remove = h("button", { type: "button", class: "danger" }, "Delete");
  const statusLine = h("p", { class: "status-line", role: "status", "aria-live": "polite" });
  const problem = h("div");
  const facts = h("div");
  const criteria = h("div");
  const usage = h("div");
  const items = h("div", { "aria-busy": "true" });
  const filter = h("select", { id: "item-filter" }, Object.entries(SHOWN).map(([value, label]) => h("option", { value, selected: value === status }, label)));
  filter.addEventListener("change", () => (location.hash = `#/evals/${evalId}/runs/${runId}${filter.value ? `?status=${filter.value}` : ""}`));
  const cursors = [null];
  const newer = h("button", { type: "button", class: "secondary", disabled: true }, "← Previous");
  const older = h("button", { type: "button", class: "secondary", disabled: true }, "Next →");
  main.append(
    h("div", { class: "page-head" }, heading, h("div", { class: "actions", role: "group", "aria-label": "Run actions" }, cancel, remove)),
    statusLine, problem, facts,
    h("section", { "aria-labelledby": "run-criteria-title" }, h("h2", { id: "run-criteria-title" }, "Testing criteria"), criteria),
    h("section", { "aria-labelledby": "items-title" }, h("h2", { id: "items-title" }, "Items"),
      h("div", { class: "toolbar" }, h("label", { for: "item-filter" }, "Show"), filter), items,
      h("nav", { class: "pager", "aria-label": "Pages of items" }, newer, older)),
    h("section", { "aria-labelledby": "usage-title" }, h("h2", { id: "usage-title" }, "Tokens used"), usage));

  let shownStatus = null;
  function show(current) {
    if (shownStatus && shownStatus !== current.status) announce(`The run is now ${current.status.replace("_", " ")}`);
    shownStatus = current.status;
    const { graded, total } = current.progress;
    const counts = current.result_counts;
    statusLine.replaceChildren(statusBadge(current.status), ` ${graded} of ${total ?? "?"} items graded: ${counts.passed} passed, ${counts.failed} failed` +
      (counts.errored ? `, ${counts.errored} with a grader error` : "") + ".");
    problem.replaceChildren(current.error ? h("p", { class: "error", role: "alert" }, `Failed (${current.error.code}): ${current.error.message}`) : "");
    cancel.disabled = RUN_ENDED.includes(current.status);
    const job = current.fine_tuning_job_id;
    facts.replaceChildren(definitions({
      Eval: h("a", { href: `#/evals/${evalId}` }, evaluation.name),
      Model: current.model ? h("code", {}, current.model) : "— (the samples were given)",
      Job: job ? h("span", {}, h("a", { href: `#/jobs/${job}` }, job), `, step ${current.step}`) : null,
      "Data source": `${current.data_source.type}, ${sourceOf(current.data_source)}`,
      Created: time(current.created_at),
      Id: h("code", {}, current.id),
    }));
    const means = Object.fromEntries(current.per_testing_criteria_scores.map((c) => [c.testing_criteria, c.mean_score]));
    criteria.replaceChildren(table("Results of each testing criterion", ["Criterion", "Passed", "Failed", "Mean score"],
      current.per_testing_criteria_results.map((c) => h("tr", {}, h("td", {}, c.testing_criteria), h("td", {}, String(c.passed)),
        h("td", {}, String(c.failed)), h("td", {}, number(means[c.testing_criteria])))), "No item graded yet."));
    usage.replaceChildren(table("Tokens used by each model", ["Model", "Calls", "Prompt tokens", "Completion tokens"],
      current.per_model_usage.map((u) => h("tr", {}, h("td", {}, h("code", {}, u.model_name)), h("td", {}, String(u.invocation_count)),
        h("td", {}, String(u.prompt_tokens)), h("td", {}, String(u.completion_tokens)))),
      RUN_ENDED.includes(current.status) ? "No model was sampled." : "No model sampled yet."));
  }

  let timer = null;
  async function load() {
    clearTimeout(timer);
    const params = new URLSearchParams({ limit: PAGE_SIZE });
    if (cursors.at(-1)) params.set("after", cursors.at(-1));
    if (status) params.set("status", status);
    try {
      const [current, page] = await Promise.all([api.get(base, signal), api.get(`${base}/output_items?${params}`, signal)]);
      show(current);
      items.replaceChildren(table(`Items of this run (${SHOWN[status]})`, ["#", "Result", "Item", "Answer", "Grades"], page.data.map(itemRow),
        RUN_ENDED.includes(current.status) ? `No ${SHOWN[status]} in this run.` : "None graded yet…"));
      newer.disabled = cursors.length === 1;
      older.disabled = !page.has_more;
      older.onclick = () => {
        cursors.push(page.last_id);
        load();
      };
      if (!RUN_ENDED.includes(current.status)) timer = setTimeout(load, POLL_MS);
    } catch (error) {
      if (!signal.aborted) problem.replaceChildren(errorBox(error));
    }
    items.setAttribute("aria-busy", "false");
  }
  newer.addEventListener("click", () => {
    cursors.pop();
    load();
  });
  cancel.addEventListener("click", async () => {
    try {
      show(await api.post(`${base}/cancel`));
      announce("Cancel requested: a running run stops after its current batch.");
      load();
    } catch (error) {
      problem.replaceChildren(errorBox(error));
    }
  });
  remove.addEventListener("click", async () => {
    if (!window.confirm(`Delete the run ${run.name} with its results?`)) return;
    try {
      await api.delete(base);
      announce(`Deleted the run ${run.name}`);
      location.hash = `#/evals/${evalId}`;
    } catch (error) {
      announce(errorText(error));
      problem.replaceChildren(errorBox(error));
    }
  });
  signal.addEventListener("abort", () => clearTimeout(timer));
  show(run);
  await load();
}

function sourceOf(dataSource) {
  const source = dataSource.source ?? {};
  return source.type === "file_id" ? `file ${source.id}` : `${(source.content ?? []).length} items given`;
}

function itemRow(item) {
  return h("tr", { class: `item item-${item.status}` },
    h("td", {}, String(item.datasource_item_id)),
    h("td", {}, h("span", { class: `badge status-${item.status}` }, item.status)),
    h("td", {}, h("pre", { class: "json" }, JSON.stringify(item.datasource_item, null, 1))),
    h("td", {}, h("div", { class: "answer" }, item.sample.output_text ?? "")),
    h("td", {}, h("ul", { class: "grades" }, item.results.map(grade))));
}

function grade(result) {
  const verdict = result.passed ? "passed" : "failed";
  return h("li", { class: `grade ${verdict}` },
    h("strong", {}, result.name), ` ${number(result.score)} `, h("span", { class: `badge status-${result.passed ? "pass" : "fail"}` }, verdict),
    result.label ? h("span", { class: "hint" }, ` label ${result.label}`) : null,
    result.errors ? h("pre", { class: "error" }, JSON.stringify(result.errors, null, 1)) : null,
    result.sample ? h("details", {}, h("summary", {}, "the judge's answer"), h("pre", { class: "json" }, JSON.stringify(result.sample, null, 1))) : null);
}
