"""Sample answers at checkpoints, early stopping on the validation loss, and the best checkpoint."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from cli.sample_data import chat_examples, write_jsonl
from lmtune.metrics_log import MetricsLog
from lmtune.spec import SpecError
from tests.helpers import metric_rows
from workers.models.generation import prompt_ids
from workers.training.loop import train


def samples(run) -> list[dict]:
    return MetricsLog(run / "samples.jsonl").read()


def notices(run) -> list[dict]:
    return MetricsLog(run / "notices.jsonl").read()


def test_each_checkpoint_records_greedy_answers_to_the_first_validation_prompts(
    make_spec, chat_file, valid_file, tmp_path
):
    run = tmp_path / "run"
    train(
        make_spec(chat_file, valid_file, epochs=2, checkpoint_every_steps=3, sample_max_tokens=24, sample_prompts=None),
        run,
    )
    sets = samples(run)
    # checkpoints at 3, 4 (epoch end), 6, 8 (epoch end and last)
    assert [s["step"] for s in sets] == [3, 4, 6, 8]
    first_valid = [json.loads(line)["messages"] for line in valid_file.read_text().splitlines()[:3]]
    for s in sets:
        assert s["generation_seconds"] > 0 and s["created_at"] > 0
        assert [a["prompt"] for a in s["samples"]] == [m[:-1] for m in first_valid]  # up to the assistant turn
        assert all(a["completion_tokens"] <= 24 for a in s["samples"])

    # what was recorded is what plain transformers answers greedily with the final model
    final = run / "final"
    tokenizer, model = AutoTokenizer.from_pretrained(final), AutoModelForCausalLM.from_pretrained(final)
    answer = sets[-1]["samples"][0]
    ids = prompt_ids(tokenizer, answer["prompt"])
    output = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=24)
    expected = tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True)
    assert expected.startswith(answer["completion"]) and answer["completion"]
    # the answers change as the model learns
    assert sets[0]["samples"] != sets[-1]["samples"]


def test_sample_prompts_may_be_given_as_text_or_messages(make_spec, chat_file, tmp_path):
    prompts = [
        "hello there",
        [{"role": "system", "content": "Answer in capitals."}, {"role": "user", "content": "alpha"}],
    ]
    run = tmp_path / "run"
    train(make_spec(chat_file, epochs=1, sample_prompts=prompts, sample_max_tokens=4), run)
    [only] = samples(run)
    assert only["step"] == 4 and [a["prompt"] for a in only["samples"]] == prompts
    assert all(a["completion_tokens"] <= 4 for a in only["samples"])


def test_sample_prompts_are_bounded(make_spec, chat_file):
    with pytest.raises(SpecError, match="training.sample_prompts"):
        make_spec(chat_file, sample_prompts=["p"] * 9)
    with pytest.raises(SpecError, match="training.sample_prompts"):
        make_spec(chat_file, sample_prompts=["p" * 5000])


def test_early_stopping_and_keep_best_need_a_validation_file(make_spec, chat_file):
    for training in ({"early_stopping": {"patience": 2}}, {"keep_best": True}):
        with pytest.raises(
            SpecError, match=f"training.{next(iter(training))} watches the validation loss: give a validation_file"
        ):
            make_spec(chat_file, **training)


def test_early_stopping_ends_the_run_when_the_validation_loss_stops_improving(
    make_spec, chat_file, valid_file, tmp_path
):
    # no evaluation can improve by more than min_delta=100: the count starts at the second one
    run = tmp_path / "run"
    result = train(
        make_spec(
            chat_file, valid_file, epochs=4, eval_every_steps=2, early_stopping={"patience": 2, "min_delta": 100}
        ),
        run,
    )
    assert result.steps == 6  # evaluations at 2 (best), 4, 6: two without improvement
    assert metric_rows(run)[-1]["step"] == 6 and metric_rows(run)[-1]["total_steps"] == 16
    [notice] = notices(run)
    assert notice["step"] == 6 and notice["message"].startswith("Early stopping at step 6:")
    evaluated = {row["step"]: row["valid_loss"] for row in metric_rows(run) if "valid_loss" in row}
    assert notice["data"]["best_step"] == min(evaluated, key=evaluated.get)
    assert (run / "final" / "model.safetensors").exists() and (run / "checkpoints" / "step-000006").exists()


@pytest.mark.slow  # 32 steps, to see the validation loss fall and rise again
def test_keep_best_keeps_the_lowest_validation_loss_checkpoint_and_makes_it_final(make_spec, chat_file, tmp_path):
    # validation wants the words as given; training teaches capitals: the validation loss falls while
    # the format is learnt, then rises
    lower = [
        {"messages": [*row["messages"][:2], {"role": "assistant", "content": row["messages"][1]["content"]}]}
        for row in chat_examples(12, seed=2, spread=0.5)
    ]
    valid = write_jsonl(lower, tmp_path / "valid.jsonl")
    run = tmp_path / "run"
    train(
        make_spec(
            chat_file,
            valid,
            epochs=8,
            eval_every_steps=2,
            checkpoint_every_steps=4,
            keep_checkpoints=1,
            keep_best=True,
            lr_scheduler="constant",
        ),
        run,
    )
    losses = {row["step"]: row["valid_loss"] for row in metric_rows(run) if "valid_loss" in row}
    best = min(losses, key=losses.get)
    assert best < max(losses), "the data should make the validation loss rise again"
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == [f"step-{best:06d}", "step-000032"]
    final, chosen = (
        load_file(run / "final" / "model.safetensors"),
        load_file(run / "checkpoints" / kept[0] / "model.safetensors"),
    )
    assert all(torch.equal(final[name], chosen[name]) for name in chosen)
    assert notices(run)[-1]["data"]["best_step"] == best
