// A new job: upload the JSONL files (or pick uploaded ones), choose the model and the main options.
// An empty field keeps the server's default ("auto"). A refused file's problems are listed line by
// line; a refused setting is shown beside its field (the error's `param` names it). "Estimate" shows
// what the job would take (steps, tokens, time, memory, warnings) before it is created.

import { api, ApiError, request } from "../api.js";
import { announce, bytes, definitions, duration, errorText, h, number } from "../ui.js";

const NUMBER_FIELDS = [
  // [id, label, param, hint, attributes]
  ["n_epochs", "Epochs", "n_epochs", "empty: auto", { min: 1, step: 1 }],
  ["batch_size", "Batch size", "batch_size", "examples (DPO: pairs) per optimizer step; empty: auto", { min: 1, step: 1 }],
  ["beta", "Beta (DPO)", "beta", "how close to the starting model DPO keeps it; empty: auto (0.1)", { min: 0, step: "any" }],
  ["learning_rate", "Learning rate", "training.learning_rate", "absolute, e.g. 0.0002; empty: from the multiplier", { min: 0, step: "any" }],
  ["lora_r", "LoRA rank (r)", "training.lora.r", "empty: full fine-tuning", { min: 1, step: 1 }],
];
const METHODS = [["supervised", "Supervised"], ["dpo", "DPO (preference pairs)"]];
const ADVANCED_FIELDS = [
  ["checkpoint_every_steps", "Checkpoint every (steps)", "training.checkpoint_every_steps", "default 50", { min: 1, step: 1 }],
  ["eval_every_steps", "Validate every (steps)", "training.eval_every_steps", "default 10", { min: 1, step: 1 }],
  ["max_steps", "Stop after (steps)", "training.max_steps", "empty: all epochs", { min: 1, step: 1 }],
  ["seed", "Seed", "seed", "empty: random", { min: 0, step: 1 }],
];

export async function renderNewJob(main, _params, signal) {
  const [models, files] = await Promise.all([api.get("v1/models", signal), api.get("v1/files?purpose=fine-tune", signal)]);
  const form = h("form", { class: "card", novalidate: true });
  const problems = h("div", { class: "form-problems" });
  const submit = h("button", { type: "submit" }, "Create job");
  const estimateButton = h("button", { type: "button", class: "secondary" }, "Estimate");
  const estimate = h("div", { class: "estimate", role: "status", "aria-live": "polite" });
  const progress = h("p", { class: "hint", role: "status" });
  form.append(
    fileChooser("training", "Training data", files.data, true),
    fileChooser("validation", "Validation data (optional)", files.data, false),
    field("model", "Model", "model", "a catalogue model or one of your fine-tuned models",
      h("select", { id: "model", name: "model" }, models.data.map((model) => h("option", { value: model.id }, model.ready ? model.id : `${model.id} (not on this machine yet)`)))),
    field("method", "Method", "method", "supervised: chat, prompt/completion or text rows; DPO: preference rows",
      h("select", { id: "method", name: "method" }, METHODS.map(([value, label]) => h("option", { value }, label)))),
    h("div", { class: "grid" }, NUMBER_FIELDS.map(numberField),
      field("suffix", "Suffix", "suffix", "up to 64 characters, in the fine-tuned model's name", h("input", { id: "suffix", name: "suffix", maxlength: 64 })),
      h("div", { class: "field checkbox" }, h("input", { id: "packing", name: "packing", type: "checkbox" }),
        h("label", { for: "packing" }, "Pack several examples into each sequence"))),
    h("details", {}, h("summary", {}, "More options"), h("div", { class: "grid" }, ADVANCED_FIELDS.map(numberField))),
    problems, h("div", { class: "actions" }, estimateButton, submit), progress, estimate);
  main.append(h("h1", { tabindex: -1 }, "New fine-tuning job"), form);
  const methodChanged = () => { form.elements.beta.disabled = form.elements.method.value !== "dpo"; };
  form.elements.method.addEventListener("change", methodChanged);
  methodChanged();

  estimateButton.addEventListener("click", async () => {
    clearProblems(form, problems);
    estimate.replaceChildren();
    estimateButton.disabled = true;
    try {
      const training = await chosenFile(form, "training", progress);
      const validation = await chosenFile(form, "validation", progress);
      if (!training) throw new ApiError(400, { message: "choose a training file: upload one or pick an uploaded one", param: "training_file" });
      progress.textContent = "Counting tokens…";
      estimate.replaceChildren(estimateCard(await api.post("v1/fine_tuning/jobs/estimate", jobBody(form, training, validation))));
      progress.textContent = "";
    } catch (error) {
      progress.textContent = "";
      showProblem(form, problems, error);
    } finally {
      estimateButton.disabled = false;
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearProblems(form, problems);
    submit.disabled = true;
    try {
      const training = await chosenFile(form, "training", progress);
      const validation = await chosenFile(form, "validation", progress);
      if (!training) throw new ApiError(400, { message: "choose a training file: upload one or pick an uploaded one", param: "training_file" });
      progress.textContent = "Creating the job…";
      const job = await api.post("v1/fine_tuning/jobs", jobBody(form, training, validation));
      announce(`Job ${job.id} created`);
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      progress.textContent = "";
      showProblem(form, problems, error);
    } finally {
      submit.disabled = false;
    }
  });
}

function fileChooser(name, legend, files, required) {
  const upload = h("input", { id: `${name}-upload`, name: `${name}-upload`, type: "file", accept: ".jsonl,.json,application/jsonl", "data-param": `${name}_file` });
  const existing = h("select", { id: `${name}-existing`, name: `${name}-existing`, "data-param": `${name}_file` },
    h("option", { value: "" }, required ? "— choose —" : "— none —"),
    files.map((file) => h("option", { value: file.id }, `${file.filename} (${file.examples} examples, ${file.id})`)));
  return h("fieldset", { class: "file-chooser" }, h("legend", {}, legend),
    h("div", { class: "field" }, h("label", { for: upload.id }, "Upload a JSONL file"), upload),
    h("div", { class: "field" }, h("label", { for: existing.id }, "or use an uploaded file"), existing),
    h("div", { class: "field-error", id: `${name}_file-error` }));
}

function field(id, label, param, hint, control) {
  control.dataset.param = param;
  control.setAttribute("aria-describedby", `${id}-hint`);
  return h("div", { class: "field" }, h("label", { for: id }, label), control, h("p", { class: "hint", id: `${id}-hint` }, hint),
    h("div", { class: "field-error", id: `${param}-error` }));
}

function numberField([id, label, param, hint, attributes]) {
  return field(id, label, param, hint, h("input", { id, name: id, type: "number", inputmode: "decimal", ...attributes }));
}

function estimateCard(found) {
  const { tokens, memory, examples } = found;
  const fits = { true: "fits", false: "does not fit", null: "unknown" }[String(memory.fits)];
  return h("section", { class: "card", "aria-label": "Estimate" },
    h("h2", {}, "Estimate"),
    definitions({
      Steps: number(found.total_steps),
      "Tokens trained": `${number(tokens.trained)} (${number(tokens.per_epoch)} an epoch; ${tokens.counted_with})`,
      Time: found.estimated_seconds === null ? "unknown" : duration(found.estimated_seconds),
      "Peak memory": memory.estimated_bytes === null ? "unknown" : `${bytes(memory.estimated_bytes)} per ${memory.per}`,
      "Workers have": memory.available_bytes === null ? "no live worker" : `${bytes(memory.available_bytes)} (${fits})`,
      Examples: `${number(examples.training)} (${number(examples.truncated)} cut, ${number(examples.dropped)} skipped)`,
    }),
    h("p", { class: "hint" }, found.estimated_seconds_basis),
    found.warnings.length ? h("ul", { class: "line-errors" }, found.warnings.map((warning) => h("li", {}, warning))) : null);
}

// Files uploaded by an estimate, so that creating the job after it does not upload them again.
const uploaded = new WeakMap();

// The uploaded file's id: a newly chosen file is uploaded (and validated by the server) first.
async function chosenFile(form, name, progress) {
  const upload = form.elements[`${name}-upload`].files[0];
  if (!upload) return form.elements[`${name}-existing`].value || null;
  if (uploaded.has(upload)) return uploaded.get(upload);
  progress.textContent = `Uploading and checking ${upload.name}…`;
  const body = new FormData();
  body.append("file", upload);
  body.append("purpose", "fine-tune");
  try {
    const id = (await (await request("v1/files", { method: "POST", body })).json()).id;
    uploaded.set(upload, id);
    return id;
  } catch (error) {
    if (error instanceof ApiError) error.param = `${name}_file`;
    throw error;
  }
}

function jobBody(form, training, validation) {
  const value = (id) => (form.elements[id].value === "" ? null : Number(form.elements[id].value));
  const options = { packing: form.elements.packing.checked };
  for (const id of ["learning_rate", "checkpoint_every_steps", "eval_every_steps", "max_steps"]) {
    if (value(id) !== null) options[id] = value(id);
  }
  if (value("lora_r") !== null) options.lora = { r: value("lora_r") };
  const method = form.elements.method.value;
  const hyperparameters = {};
  for (const id of ["n_epochs", "batch_size", "beta"]) if (value(id) !== null && !form.elements[id].disabled) hyperparameters[id] = value(id);
  return {
    model: form.elements.model.value, training_file: training, validation_file: validation,
    method: { type: method, [method]: { hyperparameters } }, training: options,
    suffix: form.elements.suffix.value || null, seed: value("seed"),
  };
}

function clearProblems(form, problems) {
  problems.replaceChildren();
  for (const element of form.querySelectorAll(".field-error")) element.replaceChildren();
  for (const control of form.querySelectorAll("[aria-invalid]")) {
    control.removeAttribute("aria-invalid");
    control.setAttribute("aria-describedby", (control.getAttribute("aria-describedby") ?? "").replace(/\s*\S+-error$/, "").trim());
  }
}

// A file's problems come as "<name> is not a valid fine-tuning file:\nline 3: ...\nline 7: ...".
function showProblem(form, problems, error) {
  const [first, ...rest] = errorText(error).split("\n");
  const lines = rest.map((text) => {
    const found = /^line (\d+): (.*)$/.exec(text);
    return h("li", {}, found ? [h("strong", {}, `Line ${found[1]}`), `: ${found[2]}`] : text);
  });
  const message = h("div", { class: "error", role: "alert" }, h("p", {}, first), lines.length ? h("ul", { class: "line-errors" }, lines) : null);
  const param = error instanceof ApiError ? error.param : null;
  // a hyperparameter's param names its method (method.dpo.hyperparameters.beta): its field is the last part
  const slot = param && (form.querySelector(`[id="${param}-error"]`) ?? form.querySelector(`[id="${param.split(".").pop()}-error"]`)
    ?? form.querySelector(`[id="${param.split(".")[0]}-error"]`));
  if (!slot) {
    problems.replaceChildren(message);
    return;
  }
  slot.replaceChildren(message);
  const control = form.querySelector(`[data-param="${param}"]`) ?? form.querySelector(`[data-param="${param.split(".").pop()}"]`);
  if (control) {
    control.setAttribute("aria-invalid", "true");
    control.setAttribute("aria-describedby", `${control.getAttribute("aria-describedby") ?? ""} ${slot.id}`.trim());
    control.focus();
  }
}
