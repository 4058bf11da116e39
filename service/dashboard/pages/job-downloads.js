// A job's downloadable files: a checkpoint's or the final model's files one by one, and their GGUF
// exports (a worker makes them; the page waits on the export, then lists its files).

import { api } from "../api.js";
import { bytes, downloadButton, errorBox, errorText, h, table } from "../ui.js";

const EXPORT_POLL_MS = 1500; // how often an export in progress is re-read

// A "Files" toggle and the panel it opens: each file of a checkpoint or final model, downloadable alone.
export function fileList(path, what) {
  const panel = h("div", { class: "file-list", hidden: true });
  const toggle = h("button", { type: "button", class: "link", "aria-expanded": "false", "aria-label": `Files of ${what}` }, "Files");
  toggle.addEventListener("click", async () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    panel.hidden = !open;
    if (!open || panel.childElementCount) return;
    try {
      const listing = await api.get(path);
      panel.append(table(`Files of ${what}`, ["File", "Size", "sha256", ""], listing.data.map((file) => h("tr", {},
        h("td", {}, h("code", {}, file.path)), h("td", {}, bytes(file.bytes)),
        h("td", {}, h("code", { class: "hash", title: file.sha256 }, file.sha256.slice(0, 12) + "…")),
        h("td", {}, downloadButton("Download", file.url, file.path.split("/").at(-1), `Download ${file.path}`)))), "No files."));
    } catch (error) {
      panel.append(errorBox(error));
    }
  });
  return { toggle, panel };
}

// "GGUF f16" and "GGUF q8_0": a worker exports the model for llama.cpp and Ollama (once: asking again
// reuses the export), then its files (the .gguf file and an Ollama Modelfile) are listed for download.
export function ggufButtons(base, step, what) {
  const state = h("span", { class: "download-state", role: "status" });
  const files = h("span", { class: "export-files" });
  const buttons = ["f16", "q8_0"].map((quantization) => {
    const button = h("button", { type: "button", class: "secondary", "aria-label": `Export ${what} as GGUF ${quantization}` }, `GGUF ${quantization}`);
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        let exported = await api.post(`${base}/exports`, { format: "gguf", quantization, step });
        while (exported.status === "queued" || exported.status === "running") {
          state.textContent = exported.status === "queued" ? "waiting for a worker…" : `exporting ${Math.floor(100 * (exported.progress ?? 0))}%`;
          await new Promise((resolve) => setTimeout(resolve, EXPORT_POLL_MS));
          exported = await api.get(`${base}/exports/${exported.id}`);
        }
        if (exported.status !== "succeeded") {
          state.textContent = `the export failed: ${exported.error?.message ?? "no reason given"}`;
          return;
        }
        state.textContent = `GGUF ${quantization} ready (${bytes(exported.bytes)})`;
        const list = fileList(exported.files_url, `the GGUF ${quantization} export of ${what}`);
        files.replaceChildren(list.toggle, list.panel);
        list.toggle.click();
      } catch (error) {
        state.textContent = errorText(error);
      } finally {
        button.disabled = false;
      }
    });
    return button;
  });
  return h("span", { class: "download" }, ...buttons, state, files);
}
