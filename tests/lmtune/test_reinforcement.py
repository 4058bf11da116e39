"""Reinforcement fine-tuning's inputs: OpenAI's hyperparameters with what "auto" means here, and the
rows checked line by line against the grader that will read them."""

import json

import pytest
from pydantic import TypeAdapter, ValidationError

from lmtune.graders.schema import Grader
from lmtune.reinforcement import (
    GrpoOptions,
    ReinforcementHyperparameters,
    check_prompt_lines,
    check_upload_row,
    item_references,
    resolve,
)
from lmtune.spec import SpecError, parse_spec, resolve_hyperparameters
from lmtune.training_data import DatasetError

GRADER = TypeAdapter(Grader)
CHECK = {
    "type": "string_check",
    "name": "answer",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}",
    "operation": "eq",
}
MULTI = {
    "type": "multi",
    "name": "both",
    "graders": {
        "exact": CHECK,
        "judge": {
            "type": "score_model",
            "name": "judge",
            "model": "lmtune-tiny",
            "input": [{"role": "user", "content": "Is {{sample.output_text}} about {{ item.topic.name }}?"}],
        },
        "code": {"type": "python", "name": "code", "source": "def grade(sample, item):\n    return 1.0\n"},
    },
    "calculate_output": "exact + judge + code",
}


def row(**fields) -> dict:
    return {"messages": [{"role": "system", "content": "Answer."}, {"role": "user", "content": "2+2?"}], **fields}


def lines(rows: list[dict]) -> list[str]:
    return [json.dumps(r) for r in rows]


def job(method: dict | None = None, **fields) -> dict:
    hyperparameters = {
        "n_epochs": 2,
        "batch_size": "auto",
        "learning_rate_multiplier": 0.5,
        "compute_multiplier": 2,
        "eval_interval": 5,
        "eval_samples": "auto",
        "reasoning_effort": "low",
    }
    method = method or {"type": "reinforcement", "reinforcement": {"grader": CHECK, "hyperparameters": hyperparameters}}
    return {"model": "m", "training_file": "t.jsonl", "validation_file": "v.jsonl", "method": method, **fields}


def test_openai_sdk_shape_is_accepted_as_sent_and_resolved():
    spec = parse_spec(job())
    resolved = resolve(spec.method.hyperparameters, GrpoOptions())
    assert resolved.group_size == 8  # 4 answers per prompt at multiplier 1
    assert resolved.max_completion_tokens == 64  # low effort
    assert resolved.eval_interval == 5
    assert resolved.eval_samples == 32  # auto
    hp = resolve_hyperparameters(spec, n_examples=50)
    assert hp.n_epochs == 2 and hp.learning_rate == pytest.approx(0.5e-6)  # GRPO's base rate, 1e-6


def test_lmtune_settings_win_over_openai_multipliers():
    hp = ReinforcementHyperparameters(compute_multiplier=3, reasoning_effort="high")
    resolved = resolve(hp, GrpoOptions(group_size=3, max_completion_tokens=20))
    assert (resolved.group_size, resolved.max_completion_tokens) == (3, 20)
    # a tiny multiplier still samples a group (one answer has no group to be compared with)
    assert resolve(ReinforcementHyperparameters(compute_multiplier=0.01), GrpoOptions()).group_size == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"validation_file": None}, "method reinforcement needs a validation_file"),
        ({"hyperparameters": {"n_epochs": 1}}, "give them once, in method.reinforcement.hyperparameters"),
        ({"method": {"type": "reinforcement", "reinforcement": {}}}, "method.reinforcement.grader: Field required"),
    ],
)
def test_a_reinforcement_job_that_cannot_run_is_refused_naming_the_field(change, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**job(), **change})


def test_grpo_settings_belong_to_reinforcement_jobs_only():
    assert parse_spec(job(training={"grpo": {"beta": 0.04}})).training.grpo.beta == 0.04
    supervised = {"model": "m", "training_file": "t.jsonl", "training": {"grpo": {"beta": 0.04}}}
    with pytest.raises(SpecError, match="training.grpo: only for method"):
        parse_spec(supervised)


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        ({"compute_multiplier": 0}, 'must be "auto" or a number above 0'),
        ({"eval_interval": 0}, 'must be "auto" or an integer from 1'),
        ({"reasoning_effort": "max"}, "Input should be 'auto', 'default', 'low', 'medium' or 'high'"),
        ({"beta": 0.1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_hyperparameters_say_what_is_allowed(hyperparameters, message):
    with pytest.raises(ValidationError, match=message):
        ReinforcementHyperparameters.model_validate(hyperparameters)


def test_grpo_settings_refuse_a_group_of_one():
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        GrpoOptions(group_size=1)


def test_the_fields_templates_read_are_found_in_every_sub_grader():
    assert item_references(GRADER.validate_python(MULTI)) == ["item.answer", "item.topic.name"]


def test_good_rows_pass_and_every_bad_line_is_named():
    grader = GRADER.validate_python(MULTI)
    good = row(answer="4", topic={"name": "sums"})
    checked = list(check_prompt_lines(lines([good] * 12), grader))
    assert [r.shape for r in checked] == ["prompt"] * 12 and checked[0].data == good

    bad = [good] * 12
    bad[1] = {"messages": [*good["messages"], {"role": "assistant", "content": "4"}], "answer": "4", "topic": {}}
    bad[4] = row(topic={"name": "sums"})  # no answer
    bad[6] = row(answer="4", topic={"title": "sums"})  # topic without name
    bad[8] = {"prompt": "2+2?", "answer": "4"}
    with pytest.raises(DatasetError) as caught:
        list(check_prompt_lines(lines(bad), grader))
    assert caught.value.errors == [
        'line 2: the last message must be the user\'s (the model answers it), got "assistant"; '
        "drop the assistant's answer: the grader judges the model's own",
        'line 5: the grader reads {{item.answer}}, which this row does not have; add "answer" to every row',
        'line 7: the grader reads {{item.topic.name}}, which this row does not have; add "topic" to every row',
        'line 9: a reinforcement row needs "messages": the conversation the model answers',
    ]


def test_a_python_grader_reads_no_template_so_any_extra_fields_pass():
    grader = GRADER.validate_python({"type": "python", "name": "p", "source": "def grade(s, i):\n    return 0.0\n"})
    assert len(list(check_prompt_lines(lines([row()] * 10), grader))) == 10


def test_uploads_take_supervised_and_reinforcement_rows_and_name_the_supervised_problem_otherwise():
    assert check_upload_row(row(answer="4"))[0] == "prompt"
    assert check_upload_row({"text": "plain"})[0] == "text"
    with pytest.raises(ValueError, match="at least one message with the assistant role is required"):
        check_upload_row({"messages": [{"role": "system", "content": "only a system message"}]})
