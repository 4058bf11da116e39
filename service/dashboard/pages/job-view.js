// One job's page as drawn: its state, live charts, events, checkpoints and downloads. It draws what
// it is handed (job-data.js reads and follows the job; job-actions.js holds the buttons). Which
// charts show depends on the metrics the job has (chart.js, metric-families.js): each method's and an
// eval's scores (training.eval_id) alike.

import { blobUrl } from "../api.js";
import { MetricCharts } from "../chart.js";
import { fileList, ggufButtons } from "./job-downloads.js";
import { SamplesSection } from "./job-samples.js";
import { scoresSection } from "./job-scores.js";
import {
  ACTIVE, announce, definitions, downloadButton, errorBox, eta, h, number, progressBar, statusBadge, table, time,
} from "../ui.js";

const EVENTS_SHOWN = 200;

// What a checkpoint's row shows beside its train loss, by method: [column, metric] (the valid loss
// of the whole validation set where it was measured there)
const CHECKPOINT_COLUMNS = {
  supervised: [["Valid loss", (m) => m.full_valid_loss ?? m.valid_loss], ["Train token accuracy", (m) => m.train_mean_token_accuracy]],
  dpo: [["Valid loss", (m) => m.full_valid_loss ?? m.valid_loss], ["Preference accuracy", (m) => m.train_preference_accuracy]],
  reinforcement: [["Valid reward", (m) => m.valid_reward_mean], ["Train reward", (m) => m.train_reward_mean]],
};

export class JobView {
  // `actions`: the element holding the job's buttons (job-actions.js), shown beside the heading
  constructor(main, base, signal, method, actions) {
    this.base = base;
    this.method = method;
    this.signal = signal;
    this.steps = new Map(); // step -> that step's metrics, merged from every source
    this.checkpointRows = new Map(); // checkpoint id -> its table row, kept so a download in progress survives a refresh
    this.charts = new MetricCharts();
    this.samples = new SamplesSection(base, signal);
    this.heading = h("h1", { tabindex: -1 });
    this.statusLine = h("p", { class: "status-line", role: "status", "aria-live": "polite" });
    this.facts = h("div");
    this.failure = h("div");
    this.checkpoints = h("div");
    this.downloads = h("div");
    this.options = h("div");
    this.streamState = h("p", { class: "hint", role: "status" });
    this.events = h("ol", { class: "events", "aria-label": "Events, newest first" });
    this.lossPicture = h("div");
    main.append(
      h("div", { class: "page-head" }, this.heading, actions),
      this.statusLine, this.failure, this.facts,
      h("section", { "aria-labelledby": "charts-title" }, h("h2", { id: "charts-title" }, "Metrics"), this.charts.element),
      scoresSection(base, signal),
      this.samples.element,
      h("section", { "aria-labelledby": "checkpoints-title" }, h("h2", { id: "checkpoints-title" }, "Checkpoints"), this.checkpoints),
      h("section", { "aria-labelledby": "downloads-title" }, h("h2", { id: "downloads-title" }, "Downloads"), this.downloads, this.lossPictureDetails()),
      h("section", { "aria-labelledby": "options-title" }, h("h2", { id: "options-title" }, "Options"), this.options),
      h("section", { "aria-labelledby": "events-title" }, h("h2", { id: "events-title" }, "Events"), this.streamState, this.events));
    signal.addEventListener("abort", () => this.charts.stop());
  }

  // `pending`: an action asked for and not yet visible in the status, in words (or null)
  show(job, pending) {
    const before = this.job?.status;
    this.job = job;
    if (before && before !== job.status) announce(`The job is now ${job.status.replace("_", " ")}`);
    this.heading.replaceChildren("Job ", h("code", {}, job.id));
    this.statusLine.replaceChildren(statusBadge(job.status), " ", pending ?? summary(job));
    this.failure.replaceChildren(job.error ? h("p", { class: "error", role: "alert" }, `Failed (${job.error.code}): ${job.error.message}`) : "");
    this.facts.replaceChildren(definitions({
      Model: job.model,
      "Fine-tuned model": job.fine_tuned_model
        ? h("span", {}, h("code", {}, job.fine_tuned_model), " ", h("a", { href: playground(job.fine_tuned_model, job.model) }, "Compare with its base"))
        : null,
      Progress: progressBar(job),
      Finishes: eta(job),
      "Queue position": job.queue_position ?? "—",
      Attempt: String(job.attempt),
      Created: time(job.created_at),
      Finished: time(job.finished_at),
      "Trained tokens": job.trained_tokens ?? "—",
      "Training file": h("code", {}, job.training_file),
      "Validation file": job.validation_file ? h("code", {}, job.validation_file) : null,
    }));
    this.options.replaceChildren(
      h("h3", {}, "Hyperparameters"),
      definitions({ Method: job.method?.type ?? "supervised", Epochs: number(job.hyperparameters.n_epochs),
        "Batch size": number(job.hyperparameters.batch_size),
        "Learning rate multiplier": number(job.hyperparameters.learning_rate_multiplier),
        ...(this.method === "dpo" ? { Beta: String(job.hyperparameters.beta) } : {}),
        ...(this.method === "reinforcement" ? { Grader: grader(job.method.reinforcement.grader) } : {}), Seed: String(job.seed) }),
      h("h3", {}, "Training options"),
      definitions(Object.fromEntries(Object.entries(job.training).map(([key, value]) => [key.replaceAll("_", " "), setting(value)]))));
    this.showDownloads(job);
    if (job.metrics) this.addMetrics([job.metrics]); // carries the learning rate, which metrics events do not
  }

  addMetrics(rows) {
    for (const row of rows) this.steps.set(row.step, { ...this.steps.get(row.step), ...row });
    const sorted = [...this.steps.values()].sort((a, b) => a.step - b.step);
    this.charts.update(sorted);
  }

  addEvent(event) {
    if (event.type !== "metrics" && ACTIVE.includes(this.job.status)) announce(event.message);
    this.events.prepend(h("li", { class: `level-${event.level}` }, time(event.created_at), " ", h("span", {}, event.message)));
    while (this.events.children.length > EVENTS_SHOWN) this.events.lastChild.remove();
  }

  setStreamState(text) {
    this.streamState.textContent = text;
  }

  showFailure(error) {
    this.failure.replaceChildren(errorBox(error));
  }


  showCheckpoints(checkpoints) {
    if (!checkpoints.length) {
      this.checkpoints.replaceChildren(h("p", { class: "empty" }, "No checkpoint yet."));
      return;
    }
    const rows = checkpoints.map((checkpoint) => {
      if (!this.checkpointRows.has(checkpoint.id)) this.checkpointRows.set(checkpoint.id, this.checkpointRow(checkpoint));
      return this.checkpointRows.get(checkpoint.id);
    });
    const shown = this.checkpoints.querySelectorAll("tbody > tr.checkpoint");
    if (shown.length === rows.length && rows.every((row, i) => row === shown[i])) return;
    this.checkpoints.replaceChildren(table("Checkpoints, newest first",
      ["Step", "Created", "Train loss", ...CHECKPOINT_COLUMNS[this.method].map(([column]) => column), "Download"],
      rows.flatMap((row) => [row, row.filesRow]), ""));
  }

  checkpointRow(checkpoint) {
    const path = `${this.base}/checkpoints/${checkpoint.id}`;
    const m = checkpoint.metrics;
    const files = fileList(`${path}/files`, `checkpoint at step ${checkpoint.step_number}`);
    const row = h("tr", { class: "checkpoint", "data-step": checkpoint.step_number },
      h("td", {}, String(checkpoint.step_number), " ",
        h("a", { href: playground(checkpoint.fine_tuned_model_checkpoint, this.job.model), "aria-label": `Try the checkpoint at step ${checkpoint.step_number} in the playground` }, "Try")),
      h("td", {}, time(checkpoint.created_at)),
      h("td", {}, number(m.train_loss)),
      ...CHECKPOINT_COLUMNS[this.method].map(([, value]) => h("td", {}, number(value(m)))),
      h("td", {}, downloadButton("Archive (.tar)", path + "/content", `${checkpoint.id}.tar`, `Download the checkpoint at step ${checkpoint.step_number} as a tar archive`),
        files.toggle, ggufButtons(this.base, checkpoint.step_number, `the checkpoint at step ${checkpoint.step_number}`)));
    row.filesRow = h("tr", { class: "files-row" }, h("td", { colspan: 6 }, files.panel));
    return row;
  }

  showDownloads(job) {
    if (this.downloadsShownFor === job.status) return; // rebuilt on a status change only: a download may be running
    this.downloadsShownFor = job.status;
    const items = [h("li", {}, downloadButton("Metrics (CSV)", `${this.base}/metrics?format=csv`, `${job.id}-metrics.csv`, "Download every step's metrics as CSV"))];
    if (job.result_files.length) {
      items.push(h("li", {}, downloadButton("Results (CSV)", `v1/files/${job.result_files[0]}/content`, `${job.id}-results.csv`, "Download the results CSV")));
    }
    if (job.status === "succeeded") {
      const files = fileList(`${this.base}/final/files`, "the final model");
      items.unshift(h("li", {}, downloadButton("Final model (.tar)", `${this.base}/final/content`, `${job.id}-final.tar`, "Download the final model as a tar archive"),
        files.toggle, files.panel, ggufButtons(this.base, null, "the final model")));
    }
    this.downloads.replaceChildren(h("ul", { class: "download-list" }, items));
  }

  lossPictureDetails() {
    const details = h("details", {}, h("summary", {}, "Loss curve picture (drawn by the trainer at each checkpoint)"), this.lossPicture);
    details.addEventListener("toggle", async () => {
      if (!details.open) return;
      try {
        const url = await blobUrl(`${this.base}/loss.png`, this.signal);
        this.lossPicture.replaceChildren(h("img", { src: url, alt: "Training and validation loss against step, as drawn by the trainer", class: "loss-picture" }));
      } catch (error) {
        this.lossPicture.replaceChildren(errorBox(error));
      }
    });
    return details;
  }
}

// The playground with `model` beside `other`.
function playground(model, other) {
  return `#/playground?${new URLSearchParams({ a: model, b: other })}`;
}

function summary(job) {
  const { step, total_steps: total } = job.progress;
  if (job.status === "queued") return job.queue_position ? `Number ${job.queue_position} in the queue.` : "Waiting for a worker.";
  if (job.status === "running") return total ? `Step ${step} of ${total}; finishes ${eta(job)}.` : "Starting…";
  if (job.status === "paused") return `Paused at step ${step}; Resume continues from there.`;
  if (job.status === "succeeded") return `Finished: ${job.fine_tuned_model}.`;
  return "";
}

// "multi: digits (python), topic (string_check)", "exact (string_check)"
function grader(spec) {
  const one = (name, g) => `${name} (${g.type})`;
  if (spec.type === "multi") return `multi: ${Object.entries(spec.graders).map(([name, g]) => one(name, g)).join(", ")}`;
  return one(spec.name, spec);
}

function setting(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return Object.entries(value).map(([k, v]) => `${k} ${v}`).join(", ");
  return String(value);
}
