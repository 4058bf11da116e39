"""The work of sample answers is bounded whatever the options: prompts are counted in tokens when the
trainer starts (a given prompt past the context or the set's budget fails the job at once, naming it),
and a run takes at most MAX_SAMPLE_SETS sets however often it checkpoints."""

import pytest

from lmtune.metrics_log import MetricsLog
from lmtune.spec import MAX_SAMPLE_PROMPTS_CHARS, SpecError, parse_spec
from workers.models.errors import InvalidHyperparametersError
from workers.training import sampling
from workers.training.loop import train


def test_a_sample_prompt_past_the_models_context_fails_the_run_before_any_step(make_spec, chat_file, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(InvalidHyperparametersError) as failure:
        train(make_spec(chat_file, sample_prompts=["hello", "x" * 3000], sample_max_tokens=16), run)
    assert failure.value.code == "invalid_hyperparameters" and failure.value.param == "training.sample_prompts.1"
    assert "context of 2,048 tokens" in str(failure.value) and "3,0" in str(failure.value)
    assert not (run / "metrics.jsonl").exists() or not MetricsLog(run / "metrics.jsonl").read()


def test_a_sample_set_past_its_token_budget_fails_the_run_naming_the_prompt(
    make_spec, chat_file, tmp_path, monkeypatch
):
    monkeypatch.setattr(sampling, "MAX_SAMPLE_SET_TOKENS", 100)
    with pytest.raises(InvalidHyperparametersError) as failure:
        train(make_spec(chat_file, sample_prompts=["a" * 20, "b" * 20, "c" * 20], sample_max_tokens=16), tmp_path / "r")
    assert failure.value.param == "training.sample_prompts.2" and "more than the 100 allowed" in str(failure.value)


def test_default_prompts_that_do_not_fit_are_left_out(make_spec, chat_file, tmp_path, monkeypatch):
    monkeypatch.setattr(sampling, "MAX_SAMPLE_SET_TOKENS", 1)
    run = tmp_path / "run"
    train(make_spec(chat_file, epochs=1, sample_prompts=None, sample_max_tokens=4), run)  # trains, samples nothing
    assert (run / "final").is_dir() and MetricsLog(run / "samples.jsonl").read() == []


def test_checkpoints_at_every_step_take_at_most_the_allowed_sample_sets(make_spec, chat_file, tmp_path, monkeypatch):
    monkeypatch.setattr(sampling, "MAX_SAMPLE_SETS", 3)
    run = tmp_path / "run"
    train(make_spec(chat_file, checkpoint_every_steps=1, sample_prompts=["hi"], sample_max_tokens=2), run)
    # 8 steps, 8 checkpoints: a set every ceil(8 / 3) = 3 steps, and at the last
    assert [s["step"] for s in MetricsLog(run / "samples.jsonl").read()] == [3, 6, 8]


def test_the_spec_bounds_the_sample_prompts_characters_in_all():
    prompts = ["x" * 4000] * 4 + ["y"]
    with pytest.raises(SpecError) as refused:
        parse_spec({"model": "m", "training_file": "t", "training": {"sample_prompts": prompts}})
    assert "training.sample_prompts:" in str(refused.value) and f"{MAX_SAMPLE_PROMPTS_CHARS:,}" in str(refused.value)
