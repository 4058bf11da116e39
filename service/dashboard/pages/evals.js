// The evals: this key's, newest first, each with its testing criteria; paged with the API's cursor.
// Create them with the API, the SDK or `lmtune evals create`; their pages run them and show the results.

import { api } from "../api.js";
import { errorBox, h, table, time } from "../ui.js";

const PAGE_SIZE = 20;

export async function renderEvals(main, _params, signal) {
  const cursors = [null]; // the `after` of each page seen, to go back to newer evals
  const list = h("div");
  const newer = h("button", { type: "button", class: "secondary", disabled: true }, "← Newer");
  const older = h("button", { type: "button", class: "secondary", disabled: true }, "Older →");
  main.append(
    h("h1", { tabindex: -1 }, "Evals"),
    h("p", { class: "hint" }, "Create an eval with ", h("code", {}, "lmtune evals create"), " or the API (", h("code", {}, "POST /v1/evals"),
      "); its page runs it on any model and shows each item's grades."),
    list,
    h("nav", { class: "pager", "aria-label": "Pages of evals" }, newer, older));

  async function load() {
    const params = new URLSearchParams({ limit: PAGE_SIZE, order: "desc" });
    if (cursors.at(-1)) params.set("after", cursors.at(-1));
    let page;
    try {
      page = await api.get(`v1/evals?${params}`, signal);
    } catch (error) {
      if (!signal.aborted) list.replaceChildren(errorBox(error));
      return;
    }
    list.replaceChildren(table("Evals", ["Eval", "Testing criteria", "Created"], page.data.map((evaluation) => h("tr", {},
      h("td", {}, h("a", { href: `#/evals/${evaluation.id}` }, evaluation.name), h("div", { class: "hint" }, h("code", {}, evaluation.id))),
      h("td", {}, evaluation.testing_criteria.map((c) => `${c.name} (${c.type})`).join(", ")),
      h("td", {}, time(evaluation.created_at)))),
    "No evals yet."));
    newer.disabled = cursors.length === 1;
    older.disabled = !page.has_more;
    older.onclick = () => {
      cursors.push(page.last_id);
      load();
    };
  }
  newer.addEventListener("click", () => {
    cursors.pop();
    load();
  });
  await load();
}
