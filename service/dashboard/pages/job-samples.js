// A job's sample answers (GET .../samples): what the model answered to the sample prompts at each
// checkpoint, one set at a time (the newest first, a step chooser for the others), with each answer's
// grade where the trainer graded it (reinforcement jobs: sample-grades.js). refresh() reads the sets
// written since the last read; the job page calls it when a checkpoint is created.

import { api } from "../api.js";
import { gradeText, isGraded } from "../sample-grades.js";
import { errorBox, h, table } from "../ui.js";

const PAGE = 100;

export class SamplesSection {
  constructor(base, signal) {
    this.base = base;
    this.signal = signal;
    this.sets = [];
    this.choice = h("select", { id: "sample-step", name: "step" });
    this.choice.addEventListener("change", () => this.showSet());
    this.body = h("div");
    this.element = h("section", { "aria-labelledby": "samples-title" },
      h("h2", { id: "samples-title" }, "Sample answers"),
      h("p", { class: "hint" }, "The model's greedy answers to the sample prompts at checkpoints, as the trainer wrote them."),
      h("div", { class: "field", hidden: true }, h("label", { for: "sample-step" }, "At step"), this.choice),
      this.body);
  }

  async refresh() {
    try {
      let more = true;
      while (more) {
        const after = this.sets.length ? `&after=${this.sets.at(-1).id}` : "";
        const page = await api.get(`${this.base}/samples?limit=${PAGE}${after}`, this.signal);
        this.sets.push(...page.data);
        more = page.has_more && page.data.length > 0;
      }
    } catch (error) {
      if (!this.signal.aborted) this.body.replaceChildren(errorBox(error));
      return;
    }
    if (!this.sets.length) {
      this.body.replaceChildren(h("p", { class: "empty" }, "No sample answers yet: they are written at checkpoints."));
      return;
    }
    const chosen = this.choice.value;
    const newest = !chosen || chosen === this.choice.options[0]?.value;
    this.choice.replaceChildren(...this.sets.toReversed().map((set) => h("option", { value: set.id }, `step ${set.step}`)));
    this.choice.value = newest ? this.sets.at(-1).id : chosen; // a set being read stays; else the newest
    this.choice.closest(".field").hidden = this.sets.length < 2;
    this.showSet();
  }

  showSet() {
    const set = this.sets.find((s) => s.id === this.choice.value);
    const graded = set.samples.some(isGraded);
    const columns = ["Prompt", "Answer", ...(graded ? ["Grade"] : [])];
    this.body.replaceChildren(
      h("p", { class: "hint" }, `Step ${set.step}: ${set.samples.length} answers in ${set.generation_seconds.toFixed(2)} s.`),
      table(`Sample answers at step ${set.step}`, columns, set.samples.map((sample) => h("tr", { class: "sample" },
        h("td", {}, promptText(sample.prompt)),
        h("td", {}, h("div", { class: "answer" }, sample.completion), h("div", { class: "hint" }, `${sample.completion_tokens} tokens · ${sample.finish_reason}`)),
        graded ? h("td", { class: "grade" }, gradeText(sample) || "—") : null)),
      "No prompts."));
  }
}

// A plain prompt as it is; a conversation as its last message (the one answered), the rest on hover.
function promptText(prompt) {
  if (typeof prompt === "string") return prompt;
  const shown = prompt.map((message) => `${message.role}: ${typeof message.content === "string" ? message.content : JSON.stringify(message.content)}`);
  return h("span", { title: shown.join("\n") }, shown.at(-1) ?? "");
}
