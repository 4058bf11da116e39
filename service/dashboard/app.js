// The dashboard: hash routes (#/jobs, #/jobs/<id>, #/new, #/files, #/models, #/playground, #/evals,
// #/evals/<id>, #/evals/<id>/runs/<run id>, #/webhooks), plain ES modules,
// nothing to build. The API key arrives in the URL fragment (#key=lmt-...), which browsers never
// send to a server, or through the key form; it is kept in localStorage and removed from the URL.

import { api, apiKey, ApiError } from "./api.js";
import { announce, errorText, h } from "./ui.js";
import { renderEval } from "./pages/eval.js";
import { renderEvalRun } from "./pages/eval-run.js";
import { renderEvals } from "./pages/evals.js";
import { renderFiles } from "./pages/files.js";
import { renderJob } from "./pages/job.js";
import { renderJobs } from "./pages/jobs.js";
import { renderModels } from "./pages/models.js";
import { renderNewJob } from "./pages/new-job.js";
import { renderPlayground } from "./pages/playground.js";
import { renderWebhooks } from "./pages/webhooks.js";

const main = document.getElementById("main");
const forgetButton = document.getElementById("forget-key");
const ROUTES = [
  [/^#\/jobs\/([\w-]+)$/, "jobs", renderJob],
  [/^#\/new$/, "new", renderNewJob],
  [/^#\/files$/, "files", renderFiles],
  [/^#\/models$/, "models", renderModels],
  [/^#\/playground(?:\?(.*))?$/, "playground", renderPlayground],
  [/^#\/evals\/([\w-]+)\/runs\/([\w-]+)(?:\?(.*))?$/, "evals", renderEvalRun],
  [/^#\/evals\/([\w-]+)$/, "evals", renderEval],
  [/^#\/evals$/, "evals", renderEvals],
  [/^#\/webhooks$/, "webhooks", renderWebhooks],
  [/^#\/jobs(?:\?(.*))?$/, "jobs", renderJobs],
];
let leaving = new AbortController(); // aborted when the page changes: stops its streams and timers
let firstRender = true;

function takeKeyFromFragment() {
  const found = /^#key=([^&]+)/.exec(location.hash);
  if (!found) return;
  apiKey.set(decodeURIComponent(found[1]));
  history.replaceState(null, "", `${location.pathname}${location.search}#/jobs`);
}

function currentRoute() {
  for (const [pattern, section, render] of ROUTES) {
    const found = pattern.exec(location.hash);
    if (found) return { section, render, params: found.slice(1) };
  }
  return { section: "jobs", render: renderJobs, params: [] };
}

async function route() {
  leaving.abort();
  leaving = new AbortController();
  forgetButton.hidden = !apiKey.get();
  if (!apiKey.get()) return renderKeyForm();
  const { section, render, params } = currentRoute();
  for (const link of document.querySelectorAll("nav [data-route]")) {
    if (link.dataset.route === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.replaceChildren();
  try {
    await render(main, params, leaving.signal);
  } catch (error) {
    if (error.name === "AbortError") return;
    main.replaceChildren(h("h1", { tabindex: -1 }, "Something went wrong"), h("p", { class: "error", role: "alert" }, errorText(error)));
  }
  if (!firstRender) main.querySelector("h1")?.focus(); // tell keyboard and screen-reader users the page changed
  firstRender = false;
}

function renderKeyForm(problem) {
  const input = h("input", { id: "api-key", name: "key", type: "password", autocomplete: "off", required: true, "aria-describedby": "key-help" });
  const message = h("p", { class: "error", role: "alert" }, problem ?? "");
  const form = h("form", { class: "card narrow" },
    h("label", { for: "api-key" }, "API key"),
    input,
    h("p", { id: "key-help", class: "hint" },
      "Create one on the server with ", h("code", {}, "lmtune keys create NAME"),
      ", or open this page as ", h("code", {}, `${location.origin}${location.pathname}#key=lmt-…`),
      ". The key is kept in this browser's local storage until you choose Forget key."),
    h("button", { type: "submit" }, "Use this key"),
    message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    apiKey.set(input.value);
    try {
      await api.get("v1/models");
      location.hash = "#/jobs";
      await route();
    } catch (error) {
      apiKey.forget();
      message.textContent = error instanceof ApiError && error.status === 401 ? `The server refused this key: ${error.message}` : errorText(error);
    }
  });
  main.replaceChildren(h("h1", { tabindex: -1 }, "Sign in with an API key"), form);
  input.focus();
}

window.addEventListener("lmtune:unauthorized", (event) => {
  if (document.getElementById("api-key")) return; // the key form is checking a key: it says what happened
  apiKey.forget();
  forgetButton.hidden = true;
  leaving.abort();
  renderKeyForm(`The server refused the stored key (${event.detail}); enter another.`);
});
forgetButton.addEventListener("click", () => {
  apiKey.forget();
  announce("The API key was removed from this browser.");
  route();
});
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault(); // a plain #main would be taken for a route
  main.focus();
});
window.addEventListener("hashchange", () => {
  takeKeyFromFragment();
  route();
});

takeKeyFromFragment();
route();
