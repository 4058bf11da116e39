// One job: its data (job-data.js: the first read, then the live event stream and a poll), its view
// (job-view.js) and its buttons (job-actions.js, enabled as the job's `allowed_actions` says), tied
// together here.

import { JobActions } from "./job-actions.js";
import { JobData } from "./job-data.js";
import { JobView } from "./job-view.js";

export async function renderJob(main, [jobId], signal) {
  const base = `v1/fine_tuning/jobs/${jobId}`;
  let view; // drawn once the job is read; the handlers below run after that
  const show = (job) => {
    actions.update(job);
    view.show(job, actions.pending);
  };
  const data = new JobData(base, signal, {
    job: show,
    metrics: (rows) => view.addMetrics(rows),
    checkpoints: (checkpoints) => view.showCheckpoints(checkpoints),
    event: (event) => view.addEvent(event),
    samples: () => view.samples.refresh(),
    streamState: (text) => view.setStreamState(text),
  });
  const actions = new JobActions(base, {
    answered: (job) => {
      show(job);
      data.seen(job);
    },
    failed: (error) => view.showFailure(error),
  });
  const { job, metrics, checkpoints } = await data.load();
  view = new JobView(main, base, signal, job.method?.type ?? "supervised", actions.element);
  show(job);
  view.addMetrics(metrics);
  view.showCheckpoints(checkpoints);
  view.samples.refresh();
  data.follow();
}
