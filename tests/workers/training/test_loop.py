import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from cli.sample_data import chat_examples, write_jsonl
from lmtune.layout import file_sha256
from tests.helpers import metric_rows, train_losses
from workers.training.errors import DivergedError, InvalidDataError, OutputConflictError
from workers.training.loop import train


@pytest.mark.slow  # trains for many steps or twice
def test_loss_falls_on_a_learnable_dataset(make_spec, chat_file, tmp_path):
    train(make_spec(chat_file, epochs=6, lr_scheduler="constant"), tmp_path / "run")
    curve = train_losses(tmp_path / "run")
    assert len(curve) == 24
    assert sum(curve[-3:]) / 3 < 0.5 * curve[0]


def test_every_step_is_recorded_with_its_metrics(make_spec, chat_file, valid_file, tmp_path):
    train(make_spec(chat_file, valid_file, epochs=2, eval_every_steps=3), tmp_path / "run")
    rows = metric_rows(tmp_path / "run")
    assert [row["step"] for row in rows] == list(range(1, 9))
    for row in rows:
        assert {
            "step",
            "total_steps",
            "epoch",
            "train_loss",
            "train_mean_token_accuracy",
            "learning_rate",
            "grad_norm",
            "tokens",
            "tokens_per_second",
            "elapsed_seconds",
        } <= set(row)
        assert (
            row["total_steps"] == 8 and math.isfinite(row["train_loss"]) and 0 <= row["train_mean_token_accuracy"] <= 1
        )
    assert [row["step"] for row in rows if "valid_loss" in row] == [3, 6, 8]
    assert [row["step"] for row in rows if "full_valid_loss" in row] == [4, 8]
    assert [row["epoch"] for row in rows][3] == 1.0
    assert all(b["tokens"] > a["tokens"] for a, b in zip(rows, rows[1:]))
    assert (tmp_path / "run" / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_accumulation_gives_the_same_losses_as_one_big_batch(make_spec, chat_file, tmp_path):
    train(make_spec(chat_file, batch_size=8, epochs=1), tmp_path / "plain")
    train(make_spec(chat_file, batch_size=8, epochs=1, gradient_accumulation_steps=2), tmp_path / "accumulated")
    assert train_losses(tmp_path / "plain") == pytest.approx(train_losses(tmp_path / "accumulated"), rel=1e-5)


def test_checkpoints_are_complete_hashed_and_pruned(make_spec, chat_file, tmp_path):
    train(make_spec(chat_file, epochs=3, checkpoint_every_steps=5, keep_checkpoints=2), tmp_path / "run")
    checkpoints = tmp_path / "run" / "checkpoints"
    # saved at steps 4, 5, 8, 10, 12 (epoch ends and every 5): the newest two stay
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000010", "step-000012"]
    folder = checkpoints / "step-000012"
    manifest = json.loads((folder / "manifest.json").read_text())
    listed = {entry["path"]: entry for entry in manifest["files"]}
    assert {"model.safetensors", "config.json", "tokenizer.json", "trainer_state.json"} <= set(listed)
    assert any(path.startswith("training_state/") for path in listed)
    for path, entry in listed.items():
        assert entry["bytes"] == (folder / path).stat().st_size
        assert entry["sha256"] == file_sha256(folder / path)


@pytest.mark.slow  # trains for many steps or twice
def test_final_model_loads_in_plain_transformers_and_learned(make_spec, chat_file, tiny_model, tmp_path):
    result = train(make_spec(chat_file, epochs=6, lr_scheduler="constant"), tmp_path / "run")
    assert result.final_dir == tmp_path / "run" / "final"
    assert (result.final_dir / "manifest.json").exists()
    batch = _batch_of(chat_file, tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    tuned = AutoModelForCausalLM.from_pretrained(result.final_dir)
    with torch.no_grad():
        assert tuned(**batch).loss < 0.6 * base(**batch).loss


def _batch_of(path, tokenizer_folder):
    from transformers import AutoTokenizer

    from lmtune.training_data import validate_jsonl_file
    from workers.training.data import collate_padded, tokenize_rows

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    data = tokenize_rows(validate_jsonl_file(path), tokenizer, 512)
    return collate_padded(list(data.examples), tokenizer.pad_token_id)


def test_huge_learning_rate_stops_with_the_diverged_error(make_spec, chat_file, tmp_path):
    with pytest.raises(DivergedError, match=r"step \d+: (loss|gradient norm) is (nan|inf).*Lower the learning rate"):
        train(make_spec(chat_file, epochs=20, learning_rate=1e5, max_grad_norm=None), tmp_path / "run")
    assert not (tmp_path / "run" / "final").exists()


def test_bad_training_file_fails_before_training_with_its_lines(make_spec, tmp_path):
    rows = chat_examples(12)
    write_jsonl(rows, tmp_path / "bad.jsonl")
    lines = (tmp_path / "bad.jsonl").read_text().splitlines()
    lines[4] = '{"messages": [{"role": "user", "content": "no answer"}]}'
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidDataError, match="line 5: at least one message with the assistant role"):
        train(make_spec(tmp_path / "bad.jsonl"), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_finished_run_is_not_trained_again(make_spec, chat_file, tmp_path):
    first = train(make_spec(chat_file, epochs=1), tmp_path / "run")
    stamp = (tmp_path / "run" / "final" / "model.safetensors").stat().st_mtime_ns
    again = train(make_spec(chat_file, epochs=1), tmp_path / "run")
    assert (again.steps, again.trained_tokens) == (first.steps, first.trained_tokens)
    assert (tmp_path / "run" / "final" / "model.safetensors").stat().st_mtime_ns == stamp


def test_an_output_folder_of_another_spec_is_refused(make_spec, chat_file, tmp_path):
    train(make_spec(chat_file, epochs=1, max_steps=2, checkpoint_every_steps=1), tmp_path / "run")
    (tmp_path / "run" / "result.json").unlink()
    with pytest.raises(OutputConflictError, match="different spec"):
        train(make_spec(chat_file, epochs=1, learning_rate=1e-4), tmp_path / "run")


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_token_counts_are_every_token_trained_and_the_targets_among_them(
    make_spec, chat_file, tiny_model, tmp_path, packing
):
    result = train(make_spec(chat_file, epochs=2, packing=packing), tmp_path / "run")
    batch = _batch_of(chat_file, tiny_model)
    every_token = int(batch["attention_mask"].sum())  # no padding, prompts included
    targets = int((batch["labels"][:, 1:] != -100).sum())
    last = metric_rows(tmp_path / "run")[-1]
    assert (last["tokens"], last["target_tokens"]) == (2 * every_token, 2 * targets)
    assert targets < every_token
    assert result.trained_tokens == 2 * every_token  # billable: all tokens, as OpenAI counts them
    assert json.loads((tmp_path / "run" / "result.json").read_text())["trained_tokens"] == 2 * every_token
    assert last["tokens_per_second"] == pytest.approx(last["tokens"] / last["elapsed_seconds"], rel=0.01)
