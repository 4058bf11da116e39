// Uploaded files (training data and result CSVs): download or delete them.

import { api } from "../api.js";
import { announce, bytes, downloadButton, errorBox, errorText, h, table, time } from "../ui.js";

export async function renderFiles(main, _params, signal) {
  const list = h("div");
  main.append(h("h1", { tabindex: -1 }, "Files"), list);

  async function load() {
    const files = await api.get("v1/files", signal);
    list.replaceChildren(table("Uploaded files", ["File", "Purpose", "Size", "Examples", "Created", ""], files.data.map((file) => h("tr", {},
      h("td", {}, file.filename, h("div", { class: "hint" }, h("code", {}, file.id))),
      h("td", {}, file.purpose),
      h("td", {}, bytes(file.bytes)),
      h("td", {}, String(file.examples)),
      h("td", {}, time(file.created_at)),
      h("td", { class: "row-actions" },
        downloadButton("Download", `v1/files/${file.id}/content`, file.filename, `Download ${file.filename}`),
        h("button", { type: "button", class: "danger", "aria-label": `Delete ${file.filename} (${file.id})`, onclick: () => remove(file) }, "Delete")))),
    "No files yet: upload one with New job."));
  }

  async function remove(file) {
    if (!window.confirm(`Delete ${file.filename} (${file.id})?`)) return;
    try {
      await api.delete(`v1/files/${file.id}`);
      announce(`Deleted ${file.filename}`);
      await load();
    } catch (error) {
      announce(errorText(error));
      list.prepend(errorBox(error));
    }
  }

  await load();
}
