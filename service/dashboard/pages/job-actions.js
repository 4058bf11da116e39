// A job's buttons: Pause, Resume, Cancel, Delete. Which are enabled is the job's `allowed_actions`,
// the server's own rules (the routes refuse the others with a 409), so no status list is copied here.
// After an action the buttons wait, and the status line says so, until the job's status changes.

import { api } from "../api.js";
import { announce, errorText, h } from "../ui.js";

const ACTIONS = {
  pause: { done: "Pause requested: the trainer writes a checkpoint and stops." },
  resume: { done: "Resumed: the job is queued and continues from its checkpoint." },
  cancel: { done: "Cancel requested.", confirm: "Cancel this job? It cannot be resumed afterwards.", danger: true },
  delete: {
    done: "Job deleted.", danger: true,
    confirm: "Delete this job with its checkpoints, final model, metrics and events? This frees its disk and cannot be undone.",
  },
};

export class JobActions {
  // `answered(job)`: an action's answer, the job as it is now; `failed(error)`: the action was refused
  constructor(base, { answered, failed }) {
    this.base = base;
    this.answered = answered;
    this.failed = failed;
    this.pending = null; // the action asked for and not yet visible in the status, in words
    this.buttons = Object.fromEntries(Object.entries(ACTIONS).map(([name, action]) => [name, h("button", {
      type: "button", class: action.danger ? "danger" : "secondary", "data-action": name, onclick: () => this.act(name),
    }, capitalised(name))]));
    this.element = h("div", { class: "actions", role: "group", "aria-label": "Job actions" }, Object.values(this.buttons));
  }

  // The buttons for `job`; a change of status ends the wait for the last action.
  update(job) {
    if (this.status !== undefined && this.status !== job.status) this.pending = null;
    this.status = job.status;
    for (const [name, button] of Object.entries(this.buttons)) {
      button.disabled = !job.allowed_actions.includes(name) || this.pending !== null;
    }
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
      this.pending = job.status === this.status ? `${capitalised(name)} requested…` : null;
      this.answered(job);
      announce(action.done);
    } catch (error) {
      announce(errorText(error));
      this.failed(error);
    }
  }
}

function capitalised(name) {
  return name[0].toUpperCase() + name.slice(1);
}
