// The jobs list: newest first, filtered by status, paged with the API's cursor (`after`, has_more),
// refreshed every few seconds while a job on the page is still going.

import { api } from "../api.js";
import { ACTIVE, announce, errorBox, eta, h, progressBar, statusBadge, table, time } from "../ui.js";

const STATUSES = ["queued", "running", "paused", "succeeded", "failed", "cancelled"];
const PAGE_SIZE = 20;
const REFRESH_MS = 3000;

export async function renderJobs(main, [query], signal) {
  const status = new URLSearchParams(query ?? "").get("status") ?? "";
  const cursors = [null]; // the `after` of each page seen, to go back to newer jobs
  const filter = h("select", { id: "status-filter" },
    h("option", { value: "" }, "all"),
    STATUSES.map((name) => h("option", { value: name, selected: name === status }, name)));
  filter.addEventListener("change", () => (location.hash = filter.value ? `#/jobs?status=${filter.value}` : "#/jobs"));
  const list = h("div", { "aria-busy": "true" });
  const seen = new Map(); // job id -> status, to announce changes rather than re-read the table
  const newer = h("button", { type: "button", class: "secondary", disabled: true }, "← Newer");
  const older = h("button", { type: "button", class: "secondary", disabled: true }, "Older →");
  main.append(
    h("div", { class: "page-head" }, h("h1", { tabindex: -1 }, "Fine-tuning jobs"), h("a", { class: "button", href: "#/new" }, "New job")),
    h("div", { class: "toolbar" }, h("label", { for: "status-filter" }, "Status"), filter),
    list,
    h("nav", { class: "pager", "aria-label": "Pages of jobs" }, newer, older));

  let timer;
  async function load() {
    clearTimeout(timer);
    const after = cursors.at(-1);
    const params = new URLSearchParams({ limit: PAGE_SIZE });
    if (after) params.set("after", after);
    if (status) params.set("status", status);
    try {
      const page = await api.get(`v1/fine_tuning/jobs?${params}`, signal);
      list.replaceChildren(table("Fine-tuning jobs", ["Job", "Status", "Model", "Progress", "Finishes", "Created"],
        page.data.map(row), status ? `No ${status.replace("_", " ")} jobs.` : "No jobs yet: create one with New job."));
      for (const job of page.data) {
        if (seen.has(job.id) && seen.get(job.id) !== job.status) announce(`Job ${job.id} is now ${job.status.replace("_", " ")}`);
        seen.set(job.id, job.status);
      }
      newer.disabled = cursors.length === 1;
      older.disabled = !page.has_more;
      older.onclick = () => {
        cursors.push(page.data.at(-1).id);
        load();
      };
      if (page.data.some((job) => ACTIVE.includes(job.status)) && !signal.aborted) timer = setTimeout(load, REFRESH_MS);
    } catch (error) {
      if (error.name !== "AbortError") list.replaceChildren(errorBox(error));
    }
    list.setAttribute("aria-busy", "false");
  }
  newer.addEventListener("click", () => {
    cursors.pop();
    load();
  });
  signal.addEventListener("abort", () => clearTimeout(timer));
  await load();
}

function row(job) {
  return h("tr", {},
    h("td", {}, h("a", { href: `#/jobs/${job.id}` }, job.id), job.user_provided_suffix ? h("div", { class: "hint" }, job.user_provided_suffix) : null),
    h("td", {}, statusBadge(job.status)),
    h("td", {}, job.model),
    h("td", {}, progressBar(job)),
    h("td", {}, eta(job)),
    h("td", {}, time(job.created_at)));
}
