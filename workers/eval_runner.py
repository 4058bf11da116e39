"""One turn of a worker on the evals queue: claim the next eval run, sample and grade its items batch
by batch, record the end. Claimed, leased and fenced as a job is (lmtune.store.leases): every batch is
written by this attempt only, a cancel is read at each batch, a crash is retried by a new attempt that
grades only the items not yet stored.

Sampling runs here, on the worker, through the shared model code (a ModelCache of this process, whose
models stay loaded for the next run; `answer_batch` batches the prompts), never through the model
server's answer slots: a run of hundreds of items does not hold up anyone's chat completions.
torch is imported only when a run needs a model, so the worker parent stays light.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

from pydantic import TypeAdapter

from lmtune import eval_spec
from lmtune.graders import (
    JudgeAnswer,
    JudgeCall,
    JudgeUnavailable,
    MetricUnavailable,
    SandboxUnavailable,
    Tools,
    grade_batch,
    sample_namespace,
)
from lmtune.graders.sandbox import sandbox_limits
from lmtune.graders.schema import TestingCriterion, passes
from lmtune.graders.templates import VariableError, lookup, render
from lmtune.ids import new_id
from lmtune.layout import DataLayout
from lmtune.model_refs import ModelNotFound, resolve_model
from lmtune.problems import replace_paths
from lmtune.store import evals as eval_store
from lmtune.store import files as file_store
from lmtune.store.leases import StaleAttempt
from lmtune.store.models import EvalOutputItem, EvalRun
from workers.job_runner import WorkerContext
from workers.lease_keeper import LeaseKeeper
from workers.models.lazy_embedder import LazyEmbedder

log = logging.getLogger(__name__)
BATCH = 16  # items sampled and graded together, then written in one transaction
DEFAULT_MAX_TOKENS = 256
_CRITERIA = TypeAdapter(list[TestingCriterion])
_SOURCE = TypeAdapter(eval_spec.RunDataSource)


class RunError(Exception):
    """The run cannot be done as asked (a missing file, an item the template cannot fill...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def run_next_eval(ctx: WorkerContext, queue: str) -> None:
    """Woken by a message of the evals queue: run the eval run that is next there, if any is left."""
    if ctx.shutting_down.is_set():
        return
    claimed = eval_store.claim_next_run(
        ctx.db, queue, ctx.worker_id, ctx.settings.lease_seconds, ctx.settings.max_attempts
    )
    if claimed is None:
        return
    run, attempt = claimed
    with LeaseKeeper(ctx.db, run.id, attempt, ctx.settings.lease_seconds, beat=eval_store.heartbeat) as lease:
        try:
            _Run(ctx, run, attempt, lease).execute()
        except StaleAttempt:
            log.warning("attempt %d of eval run %s was superseded (or the run deleted); stopped", attempt, run.id)
        except (RunError, SandboxUnavailable, JudgeUnavailable, MetricUnavailable, ModelNotFound) as error:
            code = getattr(error, "code", None) or _CODES.get(type(error), "invalid_run")
            _end(ctx, run, attempt, eval_store.FAILED, error_code=code, error_message=str(error)[:2000])
        except Exception as error:  # a fault of the worker, not of the run: try again
            log.exception("attempt %d of eval run %s failed", attempt, run.id)
            reason = replace_paths(str(error), {str(ctx.settings.data_dir): "<data folder>"})[:500]
            try:
                eval_store.fail_attempt(
                    ctx.db, run.id, attempt, f"{type(error).__name__}: {reason}", ctx.settings.max_attempts
                )
            except StaleAttempt:
                pass


_CODES = {
    SandboxUnavailable: "python_graders_unavailable",
    JudgeUnavailable: "model_not_found",
    MetricUnavailable: "metric_unavailable",
    ModelNotFound: "model_not_found",
}


def _end(ctx: WorkerContext, run: EvalRun, attempt: int, status: str, **fields) -> None:
    try:
        eval_store.finish_run(ctx.db, run.id, attempt, status, **fields)
    except StaleAttempt:
        pass


@dataclass
class _Totals:
    """Counts over every item graded so far (this attempt's and earlier ones')."""

    criteria: list
    total: int = 0
    passed: int = 0
    failed: int = 0
    errored: int = 0
    per_criterion: dict = field(default_factory=dict)  # name -> [passed, failed, score sum]
    usage: dict = field(default_factory=dict)  # model -> counts

    def add(self, item: EvalOutputItem) -> None:
        self.total += 1
        errored = any(result.get("errors_found") for result in item.results)
        self.errored += errored
        self.passed += item.status == "pass"
        self.failed += item.status == "fail" and not errored
        for result in item.results:
            counts = self.per_criterion.setdefault(result["name"], [0, 0, 0.0])
            counts[0 if result["passed"] else 1] += 1
            counts[2] += result["score"]

    def add_usage(self, model: str, prompt: int, completion: int, calls: int = 1) -> None:
        counts = self.usage.setdefault(model, {"invocation_count": 0, "prompt_tokens": 0, "completion_tokens": 0})
        counts["invocation_count"] += calls
        counts["prompt_tokens"] += prompt
        counts["completion_tokens"] += completion

    def fields(self) -> dict:
        return {
            "result_counts": {
                "total": self.total,
                "passed": self.passed,
                "failed": self.failed,
                "errored": self.errored,
            },
            "per_criteria": [
                {
                    "testing_criteria": c.name,
                    "passed": self.per_criterion.get(c.name, [0, 0, 0])[0],
                    "failed": self.per_criterion.get(c.name, [0, 0, 0])[1],
                    "mean_score": self.per_criterion[c.name][2] / max(sum(self.per_criterion[c.name][:2]), 1)
                    if c.name in self.per_criterion
                    else None,
                }
                for c in self.criteria
            ],
            "per_model_usage": [
                {
                    "model_name": model,
                    **counts,
                    "total_tokens": counts["prompt_tokens"] + counts["completion_tokens"],
                    "cached_tokens": 0,
                }
                for model, counts in self.usage.items()
            ],
        }


class _Run:
    def __init__(self, ctx: WorkerContext, run: EvalRun, attempt: int, lease: LeaseKeeper):
        self.ctx, self.run, self.attempt, self.lease = ctx, run, attempt, lease
        self.data = DataLayout(ctx.settings.data_dir)

    def execute(self) -> None:
        evaluation = eval_store.get_eval(self.ctx.db, self.run.eval_id, self.run.owner)
        if evaluation is None:
            raise StaleAttempt("the eval was deleted")
        criteria = _CRITERIA.validate_python(evaluation.testing_criteria)
        source = _SOURCE.validate_python(self.run.data_source)
        rows = self._rows(source)
        totals = _Totals(criteria)
        for item in eval_store.output_items_of(self.ctx.db, self.run.id):
            totals.add(item)
        done = eval_store.graded_item_ids(self.ctx.db, self.run.id)
        left = [(index, row) for index, row in enumerate(rows) if index not in done]
        tools = Tools(judge=_WorkerJudge(self), embedder=_embedder, sandbox=sandbox_limits(self.ctx.settings))
        for start in range(0, len(left), BATCH):
            self.lease.check()
            batch = left[start : start + BATCH]
            samples = self._samples(source, batch, totals)
            items = self._grade(criteria, batch, samples, tools, totals)
            cancel = eval_store.save_items(self.ctx.db, self.run.id, self.attempt, items, totals.fields())
            if cancel or self.ctx.shutting_down.is_set():
                if cancel:
                    _end(self.ctx, self.run, self.attempt, eval_store.CANCELED, **totals.fields())
                else:  # handed back: the next attempt grades what is left, using no failure
                    _end(self.ctx, self.run, self.attempt, eval_store.QUEUED)
                return
        _end(self.ctx, self.run, self.attempt, eval_store.COMPLETED, **totals.fields())

    def _rows(self, source) -> list:
        path = None
        if isinstance(source.source, eval_spec.FileId):
            row = file_store.get_file(self.ctx.db, source.source.id, self.run.owner)
            if row is None:
                raise RunError("file_not_found", f"the run's file {source.source.id} was deleted")
            path = self.data.resolve(row.path)
        try:
            return eval_spec.rows(source.source, path, eval_spec.MAX_INLINE_ITEMS)
        except eval_spec.RowsError as error:
            raise RunError("invalid_file", str(error)) from None

    def _samples(self, source, batch: list, totals: _Totals) -> list[dict]:
        """Each item's sample: generated (completions) or given (jsonl)."""
        if isinstance(source, eval_spec.JsonlDataSource):
            return [_given(row.sample or {}) for _, row in batch]
        prompts = [prompt_messages(source.input_messages, row.item) for _, row in batch]
        sampling = source.sampling_params or eval_spec.SamplingParams()
        answers = self._models().answer_batch(
            self._served(source.model), prompts, _params(sampling, sampling.max_completion_tokens or DEFAULT_MAX_TOKENS)
        )
        samples = []
        for prompt, answer in zip(prompts, answers):
            choice = answer.choices[0]
            totals.add_usage(source.model, answer.prompt_tokens, choice.tokens)
            message = {"role": "assistant", "content": choice.text}
            samples.append(
                {
                    **sample_namespace(
                        choice.text, choices=[{"index": 0, "message": message, "finish_reason": choice.finish_reason}]
                    ),
                    "model": source.model,
                    "input": prompt,
                    "output": [message],
                    "finish_reason": choice.finish_reason,
                    "usage": {
                        "prompt_tokens": answer.prompt_tokens,
                        "completion_tokens": choice.tokens,
                        "total_tokens": answer.prompt_tokens + choice.tokens,
                        "cached_tokens": 0,
                    },
                    "max_completion_tokens": sampling.max_completion_tokens or DEFAULT_MAX_TOKENS,
                    "temperature": sampling.temperature or 0.0,
                    "top_p": sampling.top_p or 1.0,
                    "seed": sampling.seed or 0,
                    "error": None,
                }
            )
        return samples

    def _grade(self, criteria, batch, samples, tools: Tools, totals: _Totals) -> list[EvalOutputItem]:
        results = criteria_results(criteria, [(sample, row.item) for sample, (_, row) in zip(samples, batch)], tools)
        items = []
        for (index, row), sample, found in zip(batch, samples, results):
            for result in found:
                for model, usage in result.pop("usage").items():
                    totals.add_usage(model, usage["prompt_tokens"], usage["completion_tokens"])
            item = EvalOutputItem(
                id=new_id("outputitem", "_"),
                run_id=self.run.id,
                datasource_item_id=index,
                datasource_item=row.item,
                sample={k: v for k, v in sample.items() if k not in ("output_json", "output_tools", "choices")},
                results=found,
                status="pass" if all(result["passed"] for result in found) else "fail",
                created_at=int(time.time()),
            )
            totals.add(item)
            items.append(item)
        return items

    def _models(self):
        if self.ctx.eval_models is None:
            from workers.serving.engine import ModelCache  # torch: only once a run samples a model

            self.ctx.eval_models = ModelCache(
                self.ctx.settings.serve_max_models, self.ctx.settings.serve_max_memory_mb << 20
            )
        return self.ctx.eval_models

    def _served(self, model: str) -> dict:
        served = asdict(resolve_model(self.ctx.db, self.data, model, self.run.owner))
        served.pop("id")
        return served


def prompt_messages(input_messages, item: dict) -> list[dict]:
    """The chat messages a data source's `input_messages` make for one item: a template filled from
    `{{item.*}}`, or the list of messages an `item_reference` names."""
    namespaces = {"item": item}
    try:
        if isinstance(input_messages, eval_spec.ItemReference):
            messages = lookup(input_messages.item_reference, namespaces)
            if not (isinstance(messages, list) and all(isinstance(m, dict) for m in messages)):
                raise RunError("invalid_item_reference", f"{input_messages.item_reference} must be a list of messages")
            return [{"role": m.get("role", "user"), "content": str(m.get("content", ""))} for m in messages]
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": render(m.text(), namespaces)}
            for m in input_messages.template
        ]
    except VariableError as error:
        raise RunError("invalid_template", f"input_messages: {error}") from None


def criteria_results(criteria: list, pairs: list[tuple[dict, dict]], tools: Tools) -> list[list[dict]]:
    """For each (sample, item) pair, each criterion's result as an output item shows it (name, type,
    score, passed, the judge's answer, errors), with the judges' token `usage`. Any sampler can call
    this: an eval run here, training's evaluations at checkpoints next."""
    grades = [grade_batch(criterion, pairs, tools) for criterion in criteria]
    return [
        [
            {
                "name": criterion.name,
                "type": criterion.type,
                "score": grade.score,
                "passed": not grade.failed
                and passes(criterion, grade.score, grade.label is not None and grade.score >= 1),
                "sample": grade.judge,
                "errors_found": grade.failed,
                "errors": {k: v for k, v in grade.errors.items() if v} or None,
                "label": grade.label,
                "usage": grade.usage,
            }
            for criterion, grade in zip(criteria, (per_criterion[position] for per_criterion in grades))
        ]
        for position in range(len(pairs))
    ]


class _WorkerJudge:
    """Model graders' judge on the worker: the run owner's model, batched on this process's models."""

    def __init__(self, run: _Run):
        self.run = run

    def complete(self, model: str, calls: list[JudgeCall]) -> list[JudgeAnswer]:
        if not calls:
            return []
        try:
            served = self.run._served(model)
        except ModelNotFound as error:
            raise JudgeUnavailable(str(error)) from None
        # the calls of one grader share its sampling settings: one batch
        params = _params(calls[0], calls[0].max_tokens)
        answers = self.run._models().answer_batch(served, [call.messages for call in calls], params)
        return [JudgeAnswer(a.choices[0].text, a.prompt_tokens, a.choices[0].tokens) for a in answers]


def _params(sampling, max_tokens: int):
    from workers.models.generation import GenerationParams

    return GenerationParams(
        max_tokens=max_tokens,
        temperature=sampling.temperature or 0.0,
        top_p=sampling.top_p or 1.0,
        seed=sampling.seed,
    )


def _given(sample: dict) -> dict:
    """A jsonl run's sample as the `sample` namespace: output_text from the sample or its choices."""
    text = sample.get("output_text")
    if text is None:
        choices = sample.get("choices") or [{}]
        text = ((choices[0] or {}).get("message") or {}).get("content") or ""
    return {**sample, **sample_namespace(str(text), sample.get("output_tools"), sample.get("choices"))}


_embedder = LazyEmbedder()
