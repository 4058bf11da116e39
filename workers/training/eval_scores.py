"""An eval's scores at each evaluation (`training.eval_id`, lmtune/training_eval.py): greedy answers
to validation rows, graded by the eval's testing criteria, as metrics `eval_<criterion>` (each
criterion's mean score) and `eval_pass_rate` (the share of rows passing every criterion), which the
loop records as `valid_eval_*` beside the validation loss.

The rows are the first MAX_SCORED_ROWS of a fixed sample of `training.eval_sample_size` validation
rows (the same every evaluation, so scores compare across steps); one whose prompt and answer would
not fit the model's context is left out. Each process answers every world-th row, 16 at a time in
one KV-cached batch (workers/models/generation.py), and grades its answers in one batch per
criterion (lmtune/graders; a model grader's judge is loaded in the trainer: workers/models/local_judge.py); the sums are reduced so that every process has the same scores (early
stopping and keep_best may follow them).
"""

from __future__ import annotations

import torch
from accelerate import Accelerator

from lmtune.graders import Tools, criteria_results, sample_namespace
from lmtune.graders.sandbox import sandbox_limits
from lmtune.layout import RunLayout
from lmtune.settings import load_settings
from lmtune.spec import JobSpec
from lmtune.training_eval import MAX_SCORED_ROWS, PASS_RATE, TrainingEval, content_text, validation_items
from workers.models.generation import GenerationParams, end_of_turn_ids, generate_batch, prompt_ids
from workers.models.lazy_embedder import LazyEmbedder
from workers.models.local_judge import LocalJudge
from workers.training.errors import InvalidDataError

BATCH_ROWS = 16  # answered together: the KV cache of 16 answers


class EvalScores:
    def __init__(self, spec: JobSpec, layout: RunLayout, tokenizer, context: int | None):
        training = spec.training
        if not layout.eval_definition.exists():
            raise InvalidDataError(
                f"training.eval_id: the eval {training.eval_id} was not handed to the trainer; run the job "
                "through the service (it writes the eval into the run folder), or drop training.eval_id",
                param="training.eval_id",
            )
        self.eval = TrainingEval.model_validate_json(layout.eval_definition.read_text())
        self.metrics = self.eval.metric_names
        self.tokenizer = tokenizer
        self.params = GenerationParams(max_tokens=training.eval_max_tokens)
        try:
            items = validation_items(spec.validation_file)
        except ValueError as error:
            raise InvalidDataError(f"training.eval_id: {error}", param="validation_file") from None
        generator = torch.Generator().manual_seed(spec.seed)
        sample = sorted(torch.randperm(len(items), generator=generator)[: training.eval_sample_size].tolist())
        room = context - training.eval_max_tokens if context else None
        self.items, self.prompts = [], []
        for index in sample[:MAX_SCORED_ROWS]:
            ids = prompt_ids(tokenizer, _plain(items[index]["messages"]))
            if room is None or len(ids) <= room:
                self.items.append(items[index])
                self.prompts.append(ids)
        self.tools = Tools(embedder=LazyEmbedder(), sandbox=sandbox_limits(load_settings()))

    @torch.no_grad()
    def measure(self, model, accelerator: Accelerator) -> dict[str, float]:
        """`eval_<criterion>` and `eval_pass_rate` of the model now, the same on every process."""
        model = accelerator.unwrap_model(model)
        if self.tools.judge is None:  # model graders' judges, loaded on the first evaluation that needs one
            self.tools.judge = LocalJudge(accelerator.device)
        mine = range(accelerator.process_index, len(self.items), accelerator.num_processes)
        criteria = self.eval.testing_criteria
        totals = torch.zeros(len(criteria) + 2, dtype=torch.float64, device=accelerator.device)
        stop_ids = end_of_turn_ids(self.tokenizer)
        for start in range(0, len(mine), BATCH_ROWS):
            rows = mine[start : start + BATCH_ROWS]
            with accelerator.autocast():
                answers = generate_batch(
                    model, self.tokenizer, [self.prompts[i] for i in rows], self.params, stop_ids=stop_ids
                )
            pairs = [(sample_namespace(answer.text), self.items[i]) for answer, i in zip(answers, rows)]
            for results in criteria_results(criteria, pairs, self.tools):
                totals += torch.tensor(
                    [*(r["score"] for r in results), float(all(r["passed"] for r in results)), 1.0],
                    dtype=torch.float64,
                    device=accelerator.device,
                )
        *scores, passed, rows = accelerator.reduce(totals, "sum").tolist()
        rows = max(rows, 1.0)
        values = {self.metrics[c.name]: score / rows for c, score in zip(criteria, scores)}
        return {**values, f"eval_{PASS_RATE}": passed / rows}


def _plain(messages: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": content_text(m.get("content"))} for m in messages]
