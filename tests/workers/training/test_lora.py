import json
import shutil

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.helpers import train_losses
from workers.training.loop import train

LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}


@pytest.mark.slow  # trains for many steps or twice
def test_lora_trains_and_saves_adapters_and_a_merged_model(make_spec, chat_file, tiny_model, tmp_path):
    result = train(
        make_spec(chat_file, epochs=6, learning_rate=1e-2, lr_scheduler="constant", lora=LORA), tmp_path / "run"
    )
    curve = train_losses(tmp_path / "run")
    # the random base's lm_head and norms stay frozen, so LoRA moves the loss less than full tuning
    assert sum(curve[-3:]) / 3 < 0.93 * curve[0]

    checkpoint = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]
    assert (checkpoint / "adapter_model.safetensors").exists()
    assert json.loads((checkpoint / "adapter_config.json").read_text())["r"] == 8
    assert not (checkpoint / "model.safetensors").exists()  # the base weights are not copied per step

    inputs = torch.tensor([list(range(5, 60))])
    merged = AutoModelForCausalLM.from_pretrained(result.final_dir)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), result.final_dir / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        expected = adapted(input_ids=inputs).logits
        assert torch.allclose(merged(input_ids=inputs).logits, expected, atol=1e-4)
        assert not torch.allclose(base(input_ids=inputs).logits, expected, atol=1e-3)


def test_a_lora_run_resumes_from_its_adapter_checkpoint(make_spec, chat_file, tmp_path):
    # a constant rate: max_steps would otherwise change the cosine schedule of the cut run
    spec = make_spec(
        chat_file, epochs=3, learning_rate=1e-2, lr_scheduler="constant", lora=LORA, checkpoint_every_steps=4
    )
    train(spec, tmp_path / "reference")
    train(spec.model_copy(update={"training": spec.training.model_copy(update={"max_steps": 5})}), tmp_path / "cut")
    # continue the cut run's checkpoint at step 4 under the full spec
    for name in ("result.json", "spec.json"):
        (tmp_path / "cut" / name).unlink()
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-000005")
    train(spec, tmp_path / "cut")
    assert train_losses(tmp_path / "cut") == pytest.approx(train_losses(tmp_path / "reference"), abs=1e-4)
