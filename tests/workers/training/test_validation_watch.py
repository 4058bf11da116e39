"""Early stopping and keep_best follow the metric they name, in its direction, and rebuild from history."""

import pytest

from lmtune.layout import RunLayout
from lmtune.metrics_log import MetricsLog
from lmtune.spec import parse_spec
from workers.models.errors import InvalidHyperparametersError
from workers.training.validation_watch import ValidationWatch


def training_options(**training):
    return parse_spec(
        {"model": "m", "training_file": "t", "validation_file": "v", "training": {"eval_id": "eval_1", **training}}
    ).training


def rows(*scores):
    # a step without an evaluation between each: only rows with the metric count
    return [
        r
        for step, s in enumerate(scores, 1)
        for r in ({"step": 2 * step - 1}, {"step": 2 * step, "valid_eval_exact": s, "valid_loss": 1.0 / step})
    ]


def test_keep_best_follows_a_score_upwards_and_ignores_the_loss():
    watch = ValidationWatch(training_options(keep_best={"metric": "valid_eval_exact"}), [])
    news = []
    for row in rows(0.2, 0.6, 0.4, 0.6):
        watch.observe(row)
        news.append(watch.new_best)
    assert news == [False, True, False, True, False, False, False, False]
    assert watch.best_step == 4 and watch.protected_steps == {4} and not watch.stop


def test_early_stopping_on_a_score_counts_evaluations_without_a_rise_larger_than_min_delta():
    stopping = {"metric": "valid_eval_exact", "mode": "max", "patience": 2, "min_delta": 0.05}
    watch = ValidationWatch(training_options(early_stopping=stopping), [])
    stops = []
    for row in rows(0.2, 0.5, 0.52, 0.51, 0.9):
        watch.observe(row)
        stops.append((row["step"], watch.stop))
    assert [step for step, stop in stops if stop][0] == 8  # 0.52 and 0.51 rose by no more than 0.05 over 0.5
    assert not watch.keep_best and watch.best_step is None


def test_the_state_is_rebuilt_from_history_as_if_the_run_never_stopped(tmp_path):
    history = rows(0.2, 0.6, 0.4)
    resumed = ValidationWatch(training_options(keep_best={"metric": "valid_eval_exact"}), history)
    assert resumed.best_step == 4
    resumed.observe(rows(0, 0, 0, 0.3)[-1])  # step 8 at 0.3: not a new best
    assert not resumed.new_best and resumed.best_step == 4

    stopping = {"metric": "valid_eval_exact", "patience": 1}
    watch = ValidationWatch(training_options(early_stopping=stopping), rows(0.5, 0.4))
    assert watch.stop
    layout = RunLayout(tmp_path)
    watch.announce_stop(layout, 4)
    [notice] = MetricsLog(layout.notices).read()
    assert notice["message"] == (
        "Early stopping at step 4: valid_eval_exact has not improved by more than 0 for 1 evaluations (best 0.5000 at step 2)"
    )
    assert notice["data"] == {"early_stopped_at": 4, "best_step": 2, "metric": "valid_eval_exact", "best": 0.5}


def test_a_metric_the_evaluations_do_not_measure_fails_at_the_first_evaluation_naming_those_they_do():
    watch = ValidationWatch(training_options(keep_best={"metric": "valid_reward_mean"}), [])
    watch.observe({"step": 1, "train_loss": 2.0})  # no evaluation at this step: nothing to judge yet
    with pytest.raises(
        InvalidHyperparametersError,
        match="training.keep_best.metric: this job's evaluations measure no valid_reward_mean; "
        "they measure valid_eval_exact, valid_loss",
    ):
        watch.observe(rows(0.5)[1])
