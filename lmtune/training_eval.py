"""An eval scored during training (`training.eval_id`, docs/evals.md): what the worker hands the
trainer, how a validation row becomes an eval item, and the metric names the scores take.

At each evaluation of the validation loss the trainer answers validation rows greedily, grades the
answers with the eval's testing criteria and records `valid_eval_<criterion>` (the mean score) and
`valid_eval_pass_rate` (the share of rows that pass every criterion). A row is an item as it is, with
its conversation cut before the last assistant turn and that turn given as `answer`:

    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    -> {"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}

A prompt/completion row becomes `{"messages": [user prompt], "answer": completion, "prompt", "completion"}`,
a reinforcement row (ending with the user's message) is its own item; text rows have no prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import jsonschema
from pydantic import BaseModel, ConfigDict, Field

from lmtune.graders.schema import TestingCriterion
from lmtune.reinforcement import check_upload_row
from lmtune.training_data import DatasetError, iter_rows

# Each evaluation answers at most this many validation rows (the first of the validation-loss
# sample, `training.eval_sample_size`): greedy generation costs far more than a loss.
MAX_SCORED_ROWS = 256
PASS_RATE = "pass_rate"
SCORE_PREFIX = "valid_eval_"


class TrainingEval(BaseModel):
    """The eval as the worker writes it into the run folder (`eval.json`): the trainer has no
    database."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    name: str
    item_schema: dict
    testing_criteria: list[TestingCriterion] = Field(min_length=1)

    @property
    def metric_names(self) -> dict[str, str]:
        """Each criterion's name -> its metric (without the `valid_` prefix)."""
        return {criterion.name: "eval_" + metric_slug(criterion.name) for criterion in self.testing_criteria}


def metric_slug(name: str) -> str:
    """A criterion's name as a metric column: lower case, runs of other characters as `_`."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "criterion"


def check_criteria(criteria: Iterable) -> dict[str, str]:
    """Criteria a trainer can score, each with a metric name of its own; ValueError saying why not."""
    names: dict[str, str] = {}
    for criterion in criteria:
        metric = "eval_" + metric_slug(criterion.name)
        if metric in names.values() or metric == "eval_" + PASS_RATE:
            raise ValueError(
                f'the criterion name "{criterion.name[:64]}" gives the metric valid_{metric}, which another '
                "criterion or the pass rate already names; rename it"
            )
        names[criterion.name] = metric
    return names


def validation_item(row: dict) -> dict:
    """A validation row as an eval item (see the module's docstring); ValueError for a text row."""
    if "messages" in row:
        messages = row["messages"]
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None or messages[-1].get("role") == "user":  # a reinforcement row
            return dict(row)
        return {**row, "messages": messages[:last], "answer": content_text(messages[last].get("content"))}
    if "prompt" in row:
        return {**row, "messages": [{"role": "user", "content": row["prompt"]}], "answer": row["completion"]}
    raise ValueError(
        "a text row has no prompt to answer: give chat or prompt/completion rows (or drop training.eval_id)"
    )


def content_text(content) -> str:
    if isinstance(content, list):  # content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def validation_items(path: str | Path) -> list[dict]:
    """Every row of a validation file as an item (the trainer; the rows were checked at upload)."""
    return [validation_item(row.data) for row in iter_rows(path, 1, check_upload_row)]


def check_items_fit(path: str | Path, item_schema: dict) -> None:
    """Every row of a validation file, as an item, fits the eval's `item_schema`; DatasetError naming
    the bad lines (read as it streams: bounded memory whatever the file's size)."""
    validator = jsonschema.validators.validator_for(item_schema)(item_schema)

    def check(data: object) -> tuple[str, dict]:
        shape, row = check_upload_row(data)
        error = jsonschema.exceptions.best_match(validator.iter_errors(validation_item(row)))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "item"
            raise ValueError(f"as an eval item, {where}: {error.message[:300]} (the eval's item_schema)")
        return shape, {}

    for _ in iter_rows(path, 1, check):
        pass


__all__ = [
    "MAX_SCORED_ROWS",
    "PASS_RATE",
    "SCORE_PREFIX",
    "DatasetError",
    "TrainingEval",
    "check_criteria",
    "check_items_fit",
    "content_text",
    "metric_slug",
    "validation_item",
    "validation_items",
]
