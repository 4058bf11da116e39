"""training.eval_id: validation rows as eval items, the metric names scores take, and the spec's rules
for following a score with early_stopping and keep_best."""

import pytest

from lmtune.spec import SpecError, parse_spec
from lmtune.training_eval import (
    DatasetError,
    TrainingEval,
    check_criteria,
    check_items_fit,
    metric_slug,
    validation_item,
)
from tests.helpers import EXACT, FUZZY

CHAT = {
    "messages": [
        {"role": "system", "content": "Answer in capitals."},
        {"role": "user", "content": "paris"},
        {"role": "assistant", "content": "PARIS"},
    ],
    "topic": "cities",
}
CLOSE = {**FUZZY, "name": "Close enough"}


def spec(**training):
    return parse_spec({"model": "m", "training_file": "t", "validation_file": "v", "training": training})


def test_a_chat_row_is_its_prompt_and_its_last_assistant_turn_as_the_answer():
    item = validation_item(CHAT)
    assert item == {"messages": CHAT["messages"][:2], "answer": "PARIS", "topic": "cities"}


def test_a_prompt_completion_row_and_a_reinforcement_row_become_items_and_a_text_row_is_refused():
    assert validation_item({"prompt": "2+2?", "completion": "4"}) == {
        "prompt": "2+2?",
        "completion": "4",
        "messages": [{"role": "user", "content": "2+2?"}],
        "answer": "4",
    }
    row = {"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}
    assert validation_item(row) == row
    with pytest.raises(ValueError, match="a text row has no prompt"):
        validation_item({"text": "just text"})


def test_each_criterion_names_a_metric_and_clashes_or_judges_are_refused():
    evaluation = TrainingEval(id="eval_1", name="e", item_schema={}, testing_criteria=[CLOSE, EXACT])
    assert evaluation.metric_names == {"Close enough": "eval_close_enough", "exact": "eval_exact"}
    assert check_criteria(evaluation.testing_criteria) == evaluation.metric_names
    assert metric_slug("  !! ") == "criterion"
    clash = TrainingEval(id="eval_1", name="e", item_schema={}, testing_criteria=[EXACT, {**EXACT, "name": "Exact"}])
    with pytest.raises(ValueError, match='"Exact" gives the metric valid_eval_exact'):
        check_criteria(clash.testing_criteria)
    pass_rate = TrainingEval(id="e", name="e", item_schema={}, testing_criteria=[{**EXACT, "name": "pass rate"}])
    with pytest.raises(ValueError, match="the pass rate already names"):
        check_criteria(pass_rate.testing_criteria)


def test_validation_rows_are_checked_against_the_item_schema_line_by_line(tmp_path):
    import json

    path = tmp_path / "valid.jsonl"
    path.write_text(json.dumps(CHAT) + "\n" + json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    schema = {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["answer", "topic"]}
    with pytest.raises(DatasetError, match=r"line 2: as an eval item, item: 'topic' is a required property"):
        check_items_fit(path, schema)
    check_items_fit(path, {"type": "object", "required": ["answer", "messages"]})


def test_early_stopping_and_keep_best_follow_the_validation_loss_unless_told_otherwise():
    settings = spec(early_stopping={"patience": 2}, keep_best=True).training
    assert settings.early_stopping.metric == "valid_loss" and not settings.early_stopping.higher_is_better
    assert settings.best_by.metric == "valid_loss" and not settings.best_by.higher_is_better
    settings = spec(eval_id="eval_1", keep_best={"metric": "valid_eval_exact"}).training
    assert settings.best_by.higher_is_better  # a score: higher is better unless mode says otherwise
    assert not spec(
        eval_id="eval_1", keep_best={"metric": "valid_eval_x", "mode": "min"}
    ).training.best_by.higher_is_better
    assert spec().training.best_by is None
    assert spec(keep_best={"metric": "valid_mean_token_accuracy"}).training.best_by.higher_is_better
    assert not spec(keep_best={"metric": "valid_loss"}).training.best_by.higher_is_better


@pytest.mark.parametrize(
    "training, validation_file, message",
    [
        (
            {"keep_best": {"metric": "valid_eval_exact"}},
            "v",
            "training.keep_best.metric follows an eval's score: name the eval in training.eval_id",
        ),
        (
            {"early_stopping": {"metric": "valid_eval_exact"}},
            "v",
            "training.early_stopping.metric follows an eval's score",
        ),
        ({"eval_id": "eval_1"}, None, "training.eval_id scores answers to the validation rows: give a validation_file"),
        ({"keep_best": {"metric": "train_loss"}}, "v", "training.keep_best.metric: String should match pattern"),
    ],
)
def test_a_score_to_follow_needs_its_eval_and_an_eval_needs_validation_rows(training, validation_file, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_spec({"model": "m", "training_file": "t", "validation_file": validation_file, "training": training})
