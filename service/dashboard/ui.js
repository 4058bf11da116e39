// Small DOM helpers. Elements are built with h() and text nodes, never from HTML strings, so nothing
// the API returns (file names, messages) can inject markup.

import { ApiError, download } from "./api.js";

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2).toLowerCase(), value);
    else if (name === "class") element.className = value;
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

export const ACTIVE = ["queued", "running", "paused"]; // a job in these may still change
export const RUN_ENDED = ["completed", "failed", "canceled"]; // an eval run's final statuses
export const CATALOGUE_OWNER = "lmtune"; // `owned_by` of the catalogue's models; a fine-tuned model names its key

export function announce(message) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  setTimeout(() => (region.textContent = message), 50); // a change, so screen readers speak it again
}

export function errorText(error) {
  if (error instanceof ApiError) return error.message;
  return `${error.message || error} (is the server reachable?)`;
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, errorText(error));
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status.replace("_", " "));
}

export function progressBar(job) {
  const { step, total_steps: total } = job.progress;
  const label = total ? `${step} / ${total} steps` : step ? `${step} steps` : "not started";
  const bar = h("progress", { max: total || 1, value: total ? step : 0, "aria-label": `Progress: ${label}` });
  if (job.status === "succeeded") bar.value = bar.max;
  return h("span", { class: "progress" }, bar, h("span", { class: "progress-label" }, label));
}

export function time(seconds) {
  if (!seconds) return "—";
  const date = new Date(seconds * 1000);
  return h("time", { datetime: date.toISOString(), title: date.toLocaleString() }, date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" }));
}

export function duration(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

export function eta(job) {
  if (job.status !== "running" || !job.estimated_finish) return "—";
  const left = job.estimated_finish - Date.now() / 1000;
  return left > 0 ? `in ${duration(left)}` : "any moment";
}

export function bytes(count) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let unit = 0;
  while (count >= 1024 && unit < units.length - 1) {
    count /= 1024;
    unit += 1;
  }
  return `${unit ? count.toFixed(1) : count} ${units[unit]}`;
}

export function number(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) < 1e-3 ? value.toExponential(2) : value.toPrecision(4);
}

// On a narrow screen each row becomes a card, each cell named by its column (data-label, see style.css).
export function table(caption, columns, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  for (const row of rows.filter((row) => row.children.length === columns.length)) {
    [...row.children].forEach((cell, i) => cell.setAttribute("data-label", columns[i]));
  }
  return h("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-label": caption },
    h("table", {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, columns.map((column) => h("th", { scope: "col" }, column)))),
      h("tbody", {}, rows)));
}

export function definitions(pairs) {
  return h("dl", { class: "facts" }, Object.entries(pairs).map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value ?? "—"))));
}

// A button that downloads through the API (see api.download) and says how far it got.
export function downloadButton(label, path, fallbackName, description) {
  const state = h("span", { class: "download-state", role: "status" });
  const button = h("button", { type: "button", class: "secondary", "aria-label": description ?? null }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const saved = await download(path, fallbackName, (received, total) => {
        state.textContent = total ? `${Math.floor((100 * received) / total)}%` : bytes(received);
      });
      state.textContent = `saved ${saved.name} (${bytes(saved.bytes)})`;
    } catch (error) {
      state.textContent = errorText(error);
    } finally {
      button.disabled = false;
    }
  });
  return h("span", { class: "download" }, button, state);
}
