// Models: the catalogue (any can be a job's base model; each says whether it is on this machine) and this
// key's fine-tuned models, which can be deleted.

import { api } from "../api.js";
import { announce, CATALOGUE_OWNER, errorBox, errorText, h, table, time } from "../ui.js";

export async function renderModels(main, _params, signal) {
  const list = h("div");
  main.append(h("h1", { tabindex: -1 }, "Models"), list);

  async function load() {
    const models = await api.get("v1/models", signal);
    list.replaceChildren(table("Models", ["Model", "Kind", "On this machine", "Created", ""], models.data.map((model) => {
      const jobId = model.id.split(":").at(-1); // ft:<base>:<suffix>:<job id>
      const tuned = model.owned_by !== CATALOGUE_OWNER;
      return h("tr", {},
        h("td", {}, h("code", {}, model.id)),
        h("td", {}, tuned ? ["fine-tuned by ", h("a", { href: `#/jobs/${jobId}` }, jobId)] : "catalogue"),
        h("td", {}, model.ready ? "ready" : "not yet: downloaded on first use, if the hub is allowed"),
        h("td", {}, time(model.created)),
        h("td", { class: "row-actions" }, tuned
          ? h("button", { type: "button", class: "danger", "aria-label": `Delete ${model.id}`, onclick: () => remove(model) }, "Delete")
          : null));
    }), "No models."));
  }

  async function remove(model) {
    if (!window.confirm(`Delete ${model.id}? It can no longer be a job's base model; its job's downloads stay.`)) return;
    try {
      await api.delete(`v1/models/${encodeURIComponent(model.id)}`);
      announce(`Deleted ${model.id}`);
      await load();
    } catch (error) {
      announce(errorText(error));
      list.prepend(errorBox(error));
    }
  }

  await load();
}
