// One job: its state, live charts, events, checkpoints and downloads, and the buttons that change it.
// The charts start from GET .../metrics (every step so far) and then grow with the metrics events of
// the live stream (GET .../events?stream=true); the job object is re-read as events arrive. Which
// charts show depends on the metrics the job has (chart.js, metric-families.js): each method's and an
// eval's scores (training.eval_id) alike.

import { api, blobUrl, serverSentEvents } from "../api.js";
import { MetricCharts } from "../chart.js";
import { SamplesSection } from "./job-samples.js";
import { scoresSection } from "./job-scores.js";
import {
  ACTIVE, announce, bytes, definitions, downloadButton, errorBox, errorText, eta, h, number, progressBar,
  statusBadge, table, time,
} from "../ui.js";

const REFRESH_MS = 2000; // at most one re-read of the job (or its metrics) per this, however fast steps arrive
const POLL_MS = 5000; // while nothing streams (queued, paused): queue position and status
const RECONNECT_MS = 3000;
const EVENTS_SHOWN = 200;
const EXPORT_POLL_MS = 1500; // how often an export in progress is re-read
const ACTIONS = {
  pause: { allowed: ["queued", "running"], done: "Pause requested: the trainer writes a checkpoint and stops." },
  resume: { allowed: ["paused"], done: "Resumed: the job is queued and continues from its checkpoint." },
  cancel: { allowed: ACTIVE, done: "Cancel requested.", confirm: "Cancel this job? It cannot be resumed afterwards." },
  delete: {
    allowed: ["paused", "succeeded", "failed", "cancelled"], done: "Job deleted.",
    confirm: "Delete this job with its checkpoints, final model, metrics and events? This frees its disk and cannot be undone.",
  },
};
const DANGEROUS = new Set(["cancel", "delete"]);
// What a checkpoint's row shows beside its train loss, by method: [column, metric] (the valid loss
// of the whole validation set where it was measured there)
const CHECKPOINT_COLUMNS = {
  supervised: [["Valid loss", (m) => m.full_valid_loss ?? m.valid_loss], ["Train token accuracy", (m) => m.train_mean_token_accuracy]],
  dpo: [["Valid loss", (m) => m.full_valid_loss ?? m.valid_loss], ["Preference accuracy", (m) => m.train_preference_accuracy]],
  reinforcement: [["Valid reward", (m) => m.valid_reward_mean], ["Train reward", (m) => m.train_reward_mean]],
};

export async function renderJob(main, [jobId], signal) {
  const base = `v1/fine_tuning/jobs/${jobId}`;
  const [job, metrics, checkpoints] = await Promise.all(
    [base, `${base}/metrics`, `${base}/checkpoints?limit=100`].map((path) => api.get(path, signal)));
  const view = new JobView(main, base, signal, job.method?.type ?? "supervised");
  view.show(job);
  view.addMetrics(metrics.data);
  view.showCheckpoints(checkpoints.data);
  view.samples.refresh();
  view.follow();
}

class JobView {
  constructor(main, base, signal, method) {
    this.base = base;
    this.method = method;
    this.signal = signal;
    this.steps = new Map(); // step -> that step's metrics, merged from every source
    this.checkpointRows = new Map(); // checkpoint id -> its table row, kept so a download in progress survives a refresh
    this.timers = new Map();
    this.pending = null; // the action asked for and not yet visible in the status
    this.buttons = Object.fromEntries(Object.keys(ACTIONS).map((name) => [name, h("button", {
      type: "button", class: DANGEROUS.has(name) ? "danger" : "secondary", onclick: () => this.act(name),
    }, name[0].toUpperCase() + name.slice(1))]));
    this.charts = new MetricCharts();
    this.samples = new SamplesSection(base, signal);
    this.heading = h("h1", { tabindex: -1 });
    this.statusLine = h("p", { class: "status-line", role: "status", "aria-live": "polite" });
    this.facts = h("div");
    this.failure = h("div");
    this.checkpoints = h("div");
    this.downloads = h("div");
    this.settings = h("div");
    this.streamState = h("p", { class: "hint", role: "status" });
    this.events = h("ol", { class: "events", "aria-label": "Events, newest first" });
    this.lossPicture = h("div");
    main.append(
      h("div", { class: "page-head" }, this.heading, h("div", { class: "actions", role: "group", "aria-label": "Job actions" }, Object.values(this.buttons))),
      this.statusLine, this.failure, this.facts,
      h("section", { "aria-labelledby": "charts-title" }, h("h2", { id: "charts-title" }, "Metrics"), this.charts.element),
      scoresSection(base, signal),
      this.samples.element,
      h("section", { "aria-labelledby": "checkpoints-title" }, h("h2", { id: "checkpoints-title" }, "Checkpoints"), this.checkpoints),
      h("section", { "aria-labelledby": "downloads-title" }, h("h2", { id: "downloads-title" }, "Downloads"), this.downloads, this.lossPictureDetails()),
      h("section", { "aria-labelledby": "settings-title" }, h("h2", { id: "settings-title" }, "Settings"), this.settings),
      h("section", { "aria-labelledby": "events-title" }, h("h2", { id: "events-title" }, "Events"), this.streamState, this.events));
    signal.addEventListener("abort", () => {
      this.charts.stop();
      this.timers.forEach((timer) => clearTimeout(timer));
      clearInterval(this.poller);
    });
    this.poller = setInterval(() => ACTIVE.includes(this.job.status) && this.refreshSoon(), POLL_MS);
  }

  show(job) {
    const before = this.job?.status;
    this.job = job;
    if (before && before !== job.status) {
      this.pending = null;
      announce(`The job is now ${job.status.replace("_", " ")}`);
    }
    this.heading.replaceChildren("Job ", h("code", {}, job.id));
    this.statusLine.replaceChildren(statusBadge(job.status), " ", this.pending ?? summary(job));
    for (const [name, button] of Object.entries(this.buttons)) {
      button.disabled = !ACTIONS[name].allowed.includes(job.status) || this.pending !== null;
    }
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
    this.settings.replaceChildren(
      h("h3", {}, "Hyperparameters"),
      definitions({ Method: job.method?.type ?? "supervised", Epochs: number(job.hyperparameters.n_epochs),
        "Batch size": number(job.hyperparameters.batch_size),
        "Learning rate multiplier": number(job.hyperparameters.learning_rate_multiplier),
        ...(this.method === "dpo" ? { Beta: String(job.hyperparameters.beta) } : {}),
        ...(this.method === "reinforcement" ? { Grader: grader(job.method.reinforcement.grader) } : {}), Seed: String(job.seed) }),
      h("h3", {}, "Training settings"),
      definitions(Object.fromEntries(Object.entries(job.training).map(([key, value]) => [key.replaceAll("_", " "), setting(value)]))));
    this.showDownloads(job);
    if (job.metrics) this.addMetrics([job.metrics]); // carries the learning rate, which metrics events do not
  }

  addMetrics(rows) {
    for (const row of rows) this.steps.set(row.step, { ...this.steps.get(row.step), ...row });
    const sorted = [...this.steps.values()].sort((a, b) => a.step - b.step);
    this.charts.update(sorted);
  }

  async act(name) {
    const action = ACTIONS[name];
    if (action.confirm && !window.confirm(action.confirm)) return;
    try {
      if (name === "delete") {
        await api.delete(this.base);
        announce(action.done);
        location.hash = "#/jobs";
        return;
      }
      const job = await api.post(`${this.base}/${name}`);
      this.pending = job.status === this.job.status ? `${name[0].toUpperCase()}${name.slice(1)} requested…` : null;
      this.show(job);
      announce(action.done);
      this.refreshSoon();
    } catch (error) {
      announce(errorText(error));
      this.failure.replaceChildren(errorBox(error));
    }
  }

  // The event stream, with a reconnection when it drops (events already shown are skipped).
  async follow() {
    const seen = new Set();
    while (!this.signal.aborted) {
      try {
        this.streamState.textContent = "Live: new events appear as they happen.";
        for await (const event of serverSentEvents(`${this.base}/events?stream=true`, this.signal)) {
          if (seen.has(event.id)) continue;
          seen.add(event.id);
          this.addEvent(event);
        }
        this.streamState.textContent = "The job has ended; these are all its events.";
        await Promise.all([this.refresh(), this.reloadMetrics(), this.samples.refresh()]);
        return;
      } catch (error) {
        if (this.signal.aborted) return;
        this.streamState.textContent = `Live updates interrupted (${errorText(error)}); reconnecting…`;
        await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
      }
    }
  }

  addEvent(event) {
    if (event.type === "metrics" && event.data) this.addMetrics([event.data]);
    else if (this.job && ACTIVE.includes(this.job.status)) announce(event.message);
    if (event.message.startsWith("Checkpoint created")) {
      this.later("metrics", () => this.reloadMetrics()); // every step's learning rate
      this.later("samples", () => this.samples.refresh()); // a set is written at checkpoints
    }
    this.events.prepend(h("li", { class: `level-${event.level}` }, time(event.created_at), " ", h("span", {}, event.message)));
    while (this.events.children.length > EVENTS_SHOWN) this.events.lastChild.remove();
    this.refreshSoon();
  }

  async reloadMetrics() {
    try {
      this.addMetrics((await api.get(`${this.base}/metrics`, this.signal)).data);
    } catch (error) {
      if (!this.signal.aborted) this.streamState.textContent = `Could not read the metrics: ${errorText(error)}`;
    }
  }

  refreshSoon() {
    this.later("refresh", () => this.refresh());
  }

  // At most one pending call of each action, REFRESH_MS from now, however fast events arrive.
  later(name, action) {
    if (this.timers.has(name)) return;
    this.timers.set(name, setTimeout(() => {
      this.timers.delete(name);
      action();
    }, REFRESH_MS));
  }

  async refresh() {
    try {
      const [job, checkpoints] = await Promise.all([this.base, `${this.base}/checkpoints?limit=100`].map((path) => api.get(path, this.signal)));
      this.show(job);
      this.showCheckpoints(checkpoints.data);
    } catch (error) {
      if (!this.signal.aborted) this.streamState.textContent = `Could not refresh the job: ${errorText(error)}`;
    }
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

// A "Files" toggle and the panel it opens: each file of a checkpoint or final model, downloadable alone.
function fileList(path, what) {
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
function ggufButtons(base, step, what) {
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
