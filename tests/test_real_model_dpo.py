"""DPO moves a real pretrained model's preferences on pairs it never trained on: SmolLM2-135M-Instruct
(its own tokenizer and chat template) with a LoRA adapter comes to prefer the answer in capitals to
the same words as written, on held-out pairs of other words (the validation file)."""

import math

import pytest

from cli.sample_data import preference_examples, write_jsonl
from lmtune.spec import parse_spec
from tests.helpers import metric_rows
from workers.training.loop import train

pytestmark = pytest.mark.slow  # trains a real model


def test_dpo_moves_held_out_preferences_of_smollm2(smollm2, tmp_path):
    train_file = write_jsonl(preference_examples(24, seed=1, median_words=5), tmp_path / "train.jsonl")
    held_out = write_jsonl(preference_examples(8, seed=99, median_words=5), tmp_path / "held-out.jsonl")
    spec = parse_spec(
        {
            "model": str(smollm2),
            "training_file": str(train_file),
            "validation_file": str(held_out),
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 4, "beta": 0.1}}},
            "training": {
                "learning_rate": 5e-4,
                "lora": {"r": 8, "alpha": 16},
                "eval_every_steps": 1,
                "checkpoint_every_steps": 1000,
                "sample_prompts": [],
            },
        }
    )
    train(spec, tmp_path / "run")
    rows = metric_rows(tmp_path / "run")
    assert len(rows) == 6
    assert rows[0]["train_loss"] == pytest.approx(math.log(2), abs=1e-4)
    margins = [row["valid_rewards_margin"] for row in rows]
    # the held-out pairs: the preferred answer's margin over the other grows, and ends ahead on most
    assert margins[-1] > margins[0] + 0.5 and margins[-1] > 0
    assert rows[-1]["valid_preference_accuracy"] >= 0.75
    assert rows[-1]["valid_loss"] < math.log(2) - 0.1
