// The fields of a `completions` data source (the items, the prompt, the answers' length) and the data
// source they make: one form part for the job page's "Evaluate every checkpoint" and the eval page's
// run form. The items are a file uploaded with purpose evals: one already uploaded, or one chosen here.

import { api, request } from "../api.js";
import { errorText, h } from "../ui.js";

export class CompletionsSource {
  constructor(prefix) {
    this.file = h("select", { id: `${prefix}-file`, name: "file", required: true });
    this.prompt = h("input", { id: `${prefix}-prompt`, name: "prompt", value: "{{item.input}}", required: true });
    this.tokens = h("input", { id: `${prefix}-tokens`, name: "tokens", type: "number", min: 1, max: 4096, value: 64 });
    this.upload = h("input", { id: `${prefix}-upload`, type: "file", accept: ".jsonl" });
    this.uploadState = h("span", { class: "download-state", role: "status" });
    this.upload.addEventListener("change", () => this.uploadChosen());
    this.fields = [
      h("div", { class: "field" }, h("label", { for: this.file.id }, "Items (a file uploaded with purpose evals)"), this.file),
      h("div", { class: "field" }, h("label", { for: this.upload.id }, "or upload items (JSONL, an object a line)"), this.upload, this.uploadState),
      h("div", { class: "field" }, h("label", { for: this.prompt.id }, "Prompt, with {{item.*}}"), this.prompt),
      h("div", { class: "field" }, h("label", { for: this.tokens.id }, "Max tokens"), this.tokens),
    ];
  }

  // The key's item files as the choices; how many there are.
  async load(signal) {
    const files = (await api.get("v1/files?purpose=evals", signal)).data;
    this.file.replaceChildren(...files.map((f) => h("option", { value: f.id }, `${f.filename} (${f.examples} items)`)));
    return files.length;
  }

  async uploadChosen() {
    const chosen = this.upload.files[0];
    if (!chosen) return;
    const body = new FormData();
    body.append("purpose", "evals");
    body.append("file", chosen);
    this.uploadState.textContent = "Uploading…";
    try {
      const made = await (await request("v1/files", { method: "POST", body })).json();
      this.file.append(h("option", { value: made.id, selected: true }, `${made.filename} (${made.examples} items)`));
      this.uploadState.textContent = `Uploaded ${made.filename}: ${made.examples} items.`;
    } catch (error) {
      this.uploadState.textContent = errorText(error);
    }
    this.upload.value = "";
  }

  // Greedy answers, so that two runs differ only by their model.
  dataSource(model) {
    return {
      type: "completions",
      ...(model ? { model } : {}),
      source: { type: "file_id", id: this.file.value },
      input_messages: { type: "template", template: [{ role: "user", content: this.prompt.value }] },
      sampling_params: { max_completion_tokens: Number(this.tokens.value), temperature: 0 },
    };
  }
}
