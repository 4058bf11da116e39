// A job's data, kept current: the first read (the job, every step's metrics, its checkpoints), then
// the live event stream (GET .../events?stream=true, reconnecting when it drops) and, while nothing
// streams (queued, paused), a poll. Each new piece goes to the page's handlers; nothing is drawn here.

import { api, serverSentEvents } from "../api.js";
import { ACTIVE, errorText } from "../ui.js";

const REFRESH_MS = 2000; // at most one re-read of the job (or its metrics) per this, however fast steps arrive
const POLL_MS = 5000; // while nothing streams (queued, paused): queue position and status
const RECONNECT_MS = 3000;

export class JobData {
  // on: { job(job), metrics(rows), checkpoints(list), event(event), samples() (new sample sets may
  // have been written), streamState(text) }
  constructor(base, signal, on) {
    this.base = base;
    this.signal = signal;
    this.on = on;
    this.timers = new Map();
    signal.addEventListener("abort", () => {
      this.timers.forEach((timer) => clearTimeout(timer));
      clearInterval(this.poller);
    });
  }

  // The job as it is now, its metrics and checkpoints: handed to the handlers, the job returned.
  async load() {
    const [job, metrics, checkpoints] = await Promise.all(
      [this.base, `${this.base}/metrics`, `${this.base}/checkpoints?limit=100`].map((path) => api.get(path, this.signal)));
    this.job = job;
    return { job, metrics: metrics.data, checkpoints: checkpoints.data };
  }

  // Keep current from now on: the poll, and the event stream until the job ends.
  follow() {
    this.poller = setInterval(() => ACTIVE.includes(this.job.status) && this.refreshSoon(), POLL_MS);
    return this.stream();
  }

  // The event stream, with a reconnection when it drops (events already handed on are skipped).
  async stream() {
    const seen = new Set();
    while (!this.signal.aborted) {
      try {
        this.on.streamState("Live: new events appear as they happen.");
        for await (const event of serverSentEvents(`${this.base}/events?stream=true`, this.signal)) {
          if (seen.has(event.id)) continue;
          seen.add(event.id);
          this.received(event);
        }
        this.on.streamState("The job has ended; these are all its events.");
        await Promise.all([this.refresh(), this.reloadMetrics(), this.on.samples()]);
        return;
      } catch (error) {
        if (this.signal.aborted) return;
        this.on.streamState(`Live updates interrupted (${errorText(error)}); reconnecting…`);
        await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
      }
    }
  }

  received(event) {
    if (event.type === "metrics" && event.data) this.on.metrics([event.data]);
    this.on.event(event);
    if (event.message.startsWith("Checkpoint created")) {
      this.later("metrics", () => this.reloadMetrics()); // every step's learning rate
      this.later("samples", () => this.on.samples()); // a set is written at checkpoints
    }
    this.refreshSoon();
  }

  // A job the page got another way (an action's answer): the poll follows its status.
  seen(job) {
    this.job = job;
    this.refreshSoon();
  }

  async reloadMetrics() {
    try {
      this.on.metrics((await api.get(`${this.base}/metrics`, this.signal)).data);
    } catch (error) {
      if (!this.signal.aborted) this.on.streamState(`Could not read the metrics: ${errorText(error)}`);
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
      this.job = job;
      this.on.job(job);
      this.on.checkpoints(checkpoints.data);
    } catch (error) {
      if (!this.signal.aborted) this.on.streamState(`Could not refresh the job: ${errorText(error)}`);
    }
  }
}
