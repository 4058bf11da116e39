// The playground: chat with any model this key can use (catalogue, fine-tuned, a checkpoint), or with
// two side by side on the same messages, each answer streamed from POST /v1/chat/completions as the
// model writes it. Each side keeps its own answers in its history and the user's messages go to both;
// the system message, sampling settings and tools apply to both. #/playground?a=MODEL&b=MODEL opens
// it with those models (the job page links here to compare a model with its base or a checkpoint).

import { ApiError, serverSentEvents } from "../api.js";
import { announce, errorText, h } from "../ui.js";
import { modelChoices } from "./model-choices.js";

const SIDES = ["a", "b"];
const SAMPLING = [
  // [id, label, body field, hint, attributes]
  ["temperature", "Temperature", "temperature", "0: always the likeliest token", { min: 0, max: 2, step: "any", value: 1 }],
  ["top-p", "Top p", "top_p", "sample from this share of the probability", { min: 0.01, max: 1, step: "any", value: 1 }],
  ["max-tokens", "Max tokens", "max_completion_tokens", "of each answer", { min: 1, max: 4096, step: 1, value: 256 }],
  ["seed", "Seed", "seed", "empty: random; a seed repeats an answer", { step: 1 }],
];

export async function renderPlayground(main, [query], signal) {
  const wanted = new URLSearchParams(query ?? "");
  const choices = await modelChoices("model-choices", signal);
  const settings = new Settings(wanted);
  const panes = SIDES.map((side) => new Pane(side));
  const message = h("textarea", { id: "message", name: "message", rows: 3, "aria-describedby": "message-hint" });
  const send = h("button", { type: "submit" }, "Send");
  const stop = h("button", { type: "button", class: "secondary", disabled: true }, "Stop");
  const restart = h("button", { type: "button", class: "secondary" }, "New conversation");
  const composer = h("form", { class: "card composer", "aria-label": "Message to the models" },
    h("label", { for: "message" }, "Message"), message,
    h("p", { id: "message-hint", class: "hint" }, "Ctrl+Enter sends. Both models get it; empty sends only the tool results filled in."),
    h("div", { class: "actions" }, send, stop, restart));
  const paneHolder = h("div", { class: "panes" }, panes.map((pane) => pane.element));
  main.append(h("h1", { tabindex: -1 }, "Playground"), choices, settings.element, paneHolder, composer);

  const showPanes = () => panes.forEach((pane) => pane.show(settings.model(pane.side)));
  settings.onModelChange = () => {
    showPanes();
    const shown = new URLSearchParams(SIDES.filter((side) => settings.model(side)).map((side) => [side, settings.model(side)]));
    history.replaceState(null, "", `#/playground${shown.size ? `?${shown}` : ""}`); // shareable, without a page change
  };
  showPanes();

  let sending = null;
  composer.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = settings.body();
    if (!body) return;
    const active = panes.filter((pane, i) => settings.model(SIDES[i]));
    const text = message.value.trim() ? message.value : ""; // sent as written
    if (!active.length) return settings.problem("model-a", "Choose a model to talk to.");
    if (!text && !active.some((pane) => pane.hasResults())) return settings.problem("message", "Write a message first.");
    sending = new AbortController();
    const stopped = AbortSignal.any([signal, sending.signal]);
    send.disabled = true;
    stop.disabled = false;
    message.value = "";
    await Promise.all(active.map((pane) => pane.send(settings.model(pane.side), text, settings.systemMessages(), body, stopped)));
    send.disabled = false;
    stop.disabled = true;
    announce(active.length > 1 ? "Both models have answered." : "The model has answered.");
  });
  message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) composer.requestSubmit();
  });
  stop.addEventListener("click", () => sending?.abort());
  restart.addEventListener("click", () => {
    sending?.abort();
    panes.forEach((pane) => pane.clear());
    announce("A new conversation: the history is cleared.");
  });
}

// The models and the settings both sides share; body() is the request's settings, or null (with the
// problem shown beside its field) when one cannot be sent.
class Settings {
  constructor(wanted) {
    this.fields = {};
    this.onModelChange = () => {};
    const models = SIDES.map((side) => {
      const input = this.input(`model-${side}`, { list: "model-choices", value: wanted.get(side) ?? "", autocomplete: "off", spellcheck: "false" });
      input.addEventListener("change", () => this.onModelChange());
      return field(`model-${side}`, `Model ${side.toUpperCase()}`,
        side === "a" ? "a catalogue model, a fine-tuned model or a checkpoint (ft:…:ckpt-step-N)" : "empty: talk to model A alone", input);
    });
    this.system = h("textarea", { id: "system", name: "system", rows: 2 });
    this.tools = h("textarea", { id: "tools", name: "tools", rows: 6, spellcheck: "false", placeholder: '[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]' });
    this.toolChoice = h("select", { id: "tool-choice", name: "tool_choice" }, ["auto", "none", "required"].map((choice) => h("option", { value: choice }, choice)));
    this.stop = this.input("stop", { maxlength: 256 });
    this.element = h("form", { class: "card", "aria-label": "Models and settings", novalidate: true, onsubmit: (event) => event.preventDefault() },
      h("div", { class: "models" }, models),
      field("system", "System message", "empty: none", this.system),
      h("div", { class: "grid" },
        SAMPLING.map(([id, label, , hint, attributes]) => field(id, label, hint, this.input(id, { type: "number", ...attributes }))),
        field("stop", "Stop at", "this text ends an answer; empty: none", this.stop)),
      h("details", {}, h("summary", {}, "Tools"),
        field("tools", "Tools (JSON)", "OpenAI's tools array; the models may answer with calls to them", this.tools),
        field("tool-choice", "Tool choice", "required: each answer begins with a call", this.toolChoice)));
  }

  input(id, attributes) {
    this.fields[id] = h("input", { id, name: id, ...attributes });
    return this.fields[id];
  }

  model(side) {
    return this.fields[`model-${side}`].value.trim();
  }

  systemMessages() {
    const content = this.system.value.trim();
    return content ? [{ role: "system", content }] : [];
  }

  body() {
    const main = document.getElementById("main");
    main.querySelectorAll("[aria-invalid]").forEach((input) => input.removeAttribute("aria-invalid"));
    main.querySelectorAll(".field-problem").forEach((problem) => problem.remove());
    const body = { stream: true, stream_options: { include_usage: true } };
    for (const [id, , name] of SAMPLING) {
      const value = this.fields[id].value.trim();
      if (value === "") continue;
      if (!this.fields[id].checkValidity()) return this.problem(id, `${this.fields[id].validationMessage}`);
      body[name] = Number(value);
    }
    if (this.stop.value) body.stop = [this.stop.value];
    if (this.tools.value.trim()) {
      try {
        body.tools = JSON.parse(this.tools.value);
      } catch (error) {
        this.element.querySelector("details").open = true;
        return this.problem("tools", `Not JSON: ${error.message}`);
      }
      body.tool_choice = this.toolChoice.value;
    }
    return body;
  }

  problem(id, text) {
    const input = document.getElementById(id);
    input.setAttribute("aria-invalid", "true");
    input.closest(".field, form").append(h("p", { class: "error field-problem", role: "alert" }, text));
    input.focus();
    return null;
  }
}

// One side: its conversation (as sent to the API) and its transcript on the page.
class Pane {
  constructor(side) {
    this.side = side;
    this.title = h("code", {}, "");
    this.transcript = h("ol", { class: "transcript", "aria-label": `Conversation with model ${side.toUpperCase()}` });
    this.element = h("section", { class: "pane", "aria-labelledby": `pane-${side}-title`, "data-side": side },
      h("h2", { id: `pane-${side}-title` }, `Side ${side.toUpperCase()}: `, this.title), this.transcript);
    this.clear();
  }

  show(model) {
    this.element.hidden = !model;
    this.title.textContent = model;
  }

  clear() {
    this.history = [];
    this.calls = []; // the last answer's tool calls, each with the field for its result
    this.transcript.replaceChildren();
  }

  hasResults() {
    return this.calls.some((call) => call.result.value.trim());
  }

  async send(model, text, system, settings, signal) {
    const turn = this.calls.filter((call) => call.result.value.trim())
      .map((call) => ({ role: "tool", tool_call_id: call.id, content: call.result.value.trim() }));
    this.calls.forEach((call) => (call.result.disabled = true));
    this.calls = [];
    if (text) turn.push({ role: "user", content: text });
    if (!turn.length) return;
    const asked = turn.map((message) => this.transcript.appendChild(said(message)));
    const answer = new Answer(model);
    this.transcript.append(answer.element);
    const messages = [...system, ...this.history, ...turn];
    try {
      for await (const chunk of serverSentEvents("v1/chat/completions", signal, { method: "POST", body: { model, messages, ...settings } })) {
        if (chunk.error) throw new ApiError(0, chunk.error);
        answer.add(chunk);
      }
      answer.done();
    } catch (error) {
      if (error.name !== "AbortError") {
        answer.failed(error);
        asked.forEach((item) => item.classList.add("not-kept"));
        return;
      }
      answer.done("stopped");
    }
    this.history.push(...turn, answer.message());
    this.calls = answer.calls;
  }
}

// One streamed answer: its text as it grows, its tool calls (with a field for each call's result), and
// what it cost.
class Answer {
  constructor(model) {
    this.text = "";
    this.calls = [];
    this.started = performance.now();
    this.output = h("div", { class: "text" });
    this.callList = h("ul", { class: "tool-calls" });
    this.stats = h("p", { class: "hint answer-stats" }, "writing…");
    this.element = h("li", { class: "message assistant", "aria-busy": "true" },
      h("span", { class: "who" }, "Assistant ", h("code", {}, model)), this.output, this.callList, this.stats);
  }

  add(chunk) {
    for (const choice of chunk.choices) {
      if (choice.delta.content) {
        this.firstAt ??= performance.now();
        this.text += choice.delta.content;
        this.output.textContent = this.text;
      }
      for (const delta of choice.delta.tool_calls ?? []) this.addCall(delta);
      if (choice.finish_reason) this.finish = choice.finish_reason;
    }
    if (chunk.usage) this.usage = chunk.usage;
  }

  // A call streams as OpenAI's: its id and name first, then its arguments.
  addCall(delta) {
    if (delta.id) {
      const result = h("input", { class: "tool-result", "aria-label": `Result of ${delta.function.name} (${delta.id})`, placeholder: "its result, sent with your next message" });
      const signature = h("code", {}, `${delta.function.name}(`);
      this.calls[delta.index] = { id: delta.id, name: delta.function.name, arguments: "", signature, result };
      this.callList.append(h("li", {}, signature, result));
    }
    const call = this.calls[delta.index];
    call.arguments += delta.function?.arguments ?? "";
    call.signature.textContent = `${call.name}(${call.arguments})`;
  }

  message() {
    if (!this.calls.length) return { role: "assistant", content: this.text };
    return {
      role: "assistant", content: this.text || null,
      tool_calls: this.calls.map((call) => ({ id: call.id, type: "function", function: { name: call.name, arguments: call.arguments } })),
    };
  }

  done(how = this.finish) {
    const seconds = (performance.now() - this.started) / 1000;
    const tokens = this.usage ? `${this.usage.completion_tokens} tokens in ` : "";
    const first = this.firstAt ? `, the first after ${((this.firstAt - this.started) / 1000).toFixed(2)} s` : "";
    this.stats.textContent = `${tokens}${seconds.toFixed(2)} s${first} · ${how ?? "ended"}`;
    if (!this.text && !this.calls.length) this.output.replaceChildren(h("span", { class: "empty" }, "(no text)"));
    this.element.setAttribute("aria-busy", "false");
  }

  failed(error) {
    this.element.classList.add("failed");
    this.output.replaceChildren(h("p", { class: "error", role: "alert" }, errorText(error)));
    this.stats.textContent = "This turn is not kept in the conversation.";
    this.element.setAttribute("aria-busy", "false");
  }
}

function said(message) {
  const who = message.role === "tool" ? `Result of ${message.tool_call_id}` : "You";
  return h("li", { class: `message ${message.role}` }, h("span", { class: "who" }, who), h("div", { class: "text" }, message.content));
}

function field(id, label, hint, input) {
  input.setAttribute("aria-describedby", `${id}-hint`);
  return h("div", { class: "field" }, h("label", { for: id }, label), input, h("p", { class: "hint", id: `${id}-hint` }, hint));
}
