// Every model this key can sample, for the model fields of the playground and the eval run form: the
// catalogue, its fine-tuned models and the checkpoints of its recent jobs, as a <datalist> (any other
// id, e.g. a checkpoint of an older job, can still be typed).

import { api } from "../api.js";
import { CATALOGUE_OWNER, h } from "../ui.js";

const RECENT_JOBS = 20;

export async function modelChoices(id, signal) {
  const [models, jobs] = await Promise.all([api.get("v1/models", signal), api.get(`v1/fine_tuning/jobs?limit=${RECENT_JOBS}`, signal)]);
  const checkpoints = await Promise.all(jobs.data.map((job) => api.get(`v1/fine_tuning/jobs/${job.id}/checkpoints?limit=100`, signal)));
  const options = [
    ...models.data.map((model) => [model.id, model.owned_by !== CATALOGUE_OWNER ? "fine-tuned"
      : model.ready ? "catalogue" : "catalogue, not on this machine yet"]),
    ...checkpoints.flatMap((page) => page.data.map((c) => [c.fine_tuned_model_checkpoint, `checkpoint at step ${c.step_number}`])),
  ];
  return h("datalist", { id }, options.map(([value, label]) => h("option", { value, label })));
}
