"""Training options the model cannot take fail at start with invalid_hyperparameters and the field to change;
nothing the trainer writes for a user names a server folder."""

import json
import re

import pytest
from safetensors import safe_open

from workers.models.errors import InvalidHyperparametersError
from workers.training.errors import InvalidDataError
from workers.training.loop import train
from workers.training.model_setup import is_hub_id


def test_a_max_seq_length_past_the_models_context_fails_at_start(make_spec, chat_file, tmp_path):
    with pytest.raises(InvalidHyperparametersError) as caught:
        train(make_spec(chat_file, max_seq_length=4096), tmp_path / "run", model_name="lmtune-tiny")
    error = caught.value
    assert (error.code, error.param) == ("invalid_hyperparameters", "training.max_seq_length")
    assert "more than the 2,048 tokens model 'lmtune-tiny' can take" in str(error) and "use at most 2,048" in str(error)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_lora_targets_that_match_no_layer_fail_listing_the_models_linear_layers(make_spec, chat_file, tmp_path):
    lora = {"target_modules": ["q_proj", "nope", "attention"]}
    with pytest.raises(InvalidHyperparametersError) as caught:
        train(make_spec(chat_file, lora=lora), tmp_path / "run", model_name="lmtune-tiny")
    message = str(caught.value)
    assert caught.value.param == "training.lora.target_modules"
    assert "['nope', 'attention'] match no layer of model 'lmtune-tiny'" in message
    assert "its linear layers are down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj" in message


def test_a_bad_dataset_is_named_by_its_field_not_its_path(make_spec, chat_file, tmp_path):
    bad = tmp_path / "valid.jsonl"
    bad.write_text('{"text": "fine"}\n{oops\n')
    with pytest.raises(InvalidDataError) as caught:
        train(make_spec(chat_file, bad), tmp_path / "run")
    assert caught.value.param == "validation_file"
    assert str(caught.value).startswith("validation_file is not a valid fine-tuning file:\nline 2: invalid JSON")
    assert str(tmp_path) not in str(caught.value)


def test_saved_lora_files_name_the_base_model_by_its_name_not_its_folder(make_spec, chat_file, tiny_model, tmp_path):
    spec = make_spec(chat_file, epochs=1, lora={"r": 4}, max_steps=2, checkpoint_every_steps=1)
    result = train(spec, tmp_path / "run", model_name="lmtune-tiny")
    adapter = json.loads((result.final_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "lmtune-tiny"
    # as vLLM's --enable-lora loads an adapter: LoRA weights of linear layers only, under PEFT's names
    assert adapter["peft_type"] == "LORA" and not adapter.get("modules_to_save")
    with safe_open(result.final_dir / "adapter" / "adapter_model.safetensors", "pt") as weights:
        names = list(weights.keys())
    assert names and all(
        re.fullmatch(r"base_model\.model\.model\.layers\.\d+\..+\.lora_[AB]\.weight", n) for n in names
    )
    for folder in [result.final_dir, *(tmp_path / "run" / "checkpoints").iterdir()]:
        for path in folder.rglob("*"):
            if path.is_file():
                content = path.read_bytes()
                # neither the model's folder nor the run folder or the data files (all under tmp_path)
                assert str(tiny_model).encode() not in content and str(tmp_path).encode() not in content, path


def test_a_hub_base_model_is_recorded_by_its_hub_id_a_local_one_by_its_name(tiny_model):
    assert is_hub_id("Qwen/Qwen2.5-0.5B-Instruct")
    assert not is_hub_id(str(tiny_model)) and not is_hub_id("lmtune-tiny") and not is_hub_id("./models/x")
