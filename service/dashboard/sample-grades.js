// How a sample answer's grade reads (GET .../samples): a reinforcement job's trainer grades each
// sample with the job's grader, `reward` the grade and `grades` each (sub-)grader's score by name.
// No DOM here: the fast tests run it in Node.

import { number } from "./ui.js";

// "reward 0.75 (digits 0.5, topic 1)", "digits 0.5", or "" for an ungraded sample.
export function gradeText(sample) {
  const named = Object.entries(sample.grades ?? {}).map(([name, score]) => `${name} ${number(score)}`).join(", ");
  if (typeof sample.reward !== "number") return named;
  return named ? `reward ${number(sample.reward)} (${named})` : `reward ${number(sample.reward)}`;
}

export function isGraded(sample) {
  return typeof sample.reward === "number" || Object.keys(sample.grades ?? {}).length > 0;
}
