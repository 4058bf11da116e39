"""`training.parallelism` and `training.lora.quantize` in the job spec, and what each refuses: in the
spec (combinations that cannot run), and in the trainer (a 4-bit base on a worker without CUDA)."""

from __future__ import annotations

import json

import pytest
import yaml

from lmtune.spec import SpecError, parse_spec
from workers.training.entry import run_trainer

BASE = {"model": "m", "training_file": "f", "validation_file": "v"}


def spec_of(training: dict, **top):
    return parse_spec({**BASE, **top, "training": training})


def test_parallelism_is_ddp_unless_fsdp_is_asked_for():
    assert spec_of({}).training.parallelism == "ddp"
    assert spec_of({"parallelism": "fsdp", "lora": {}}).training.parallelism == "fsdp"
    with pytest.raises(SpecError, match="training.parallelism: Input should be 'ddp' or 'fsdp'"):
        spec_of({"parallelism": "zero3"})


@pytest.mark.parametrize(
    "training, top, what",
    [
        ({"keep_best": True}, {}, "training.keep_best"),
        ({"eval_id": "eval_1"}, {}, "training.eval_id"),
        ({"lora": {"quantize": "4bit"}}, {}, "training.lora.quantize"),
        (
            {},
            {
                "method": {
                    "type": "reinforcement",
                    "reinforcement": {
                        "grader": {
                            "type": "string_check",
                            "name": "g",
                            "input": "{{sample.output_text}}",
                            "reference": "x",
                            "operation": "eq",
                        }
                    },
                }
            },
            "method reinforcement",
        ),
    ],
)
def test_fsdp_refuses_what_a_sharded_model_cannot_do_naming_it(training, top, what):
    with pytest.raises(SpecError) as refused:
        spec_of({"parallelism": "fsdp", **training}, **top)
    assert f'training.parallelism "fsdp" cannot train with {what}' in str(refused.value)
    assert 'use "ddp"' in str(refused.value)


def test_quantize_takes_4bit_only_and_belongs_to_lora():
    assert spec_of({"lora": {"quantize": "4bit"}}).training.lora.quantize == "4bit"
    assert spec_of({"lora": {}}).training.lora.quantize is None
    with pytest.raises(SpecError, match="training.lora.quantize: Input should be '4bit'"):
        spec_of({"lora": {"quantize": "8bit"}})
    with pytest.raises(SpecError, match="training.quantize: unknown field"):
        spec_of({"quantize": "4bit"})  # a full fine-tune has no 4-bit base to train on


def test_a_4bit_base_on_a_worker_without_cuda_fails_at_once_saying_what_it_needs(tiny_model, chat_file, tmp_path):
    spec = {
        "model": str(tiny_model),
        "training_file": str(chat_file),
        "training": {"lora": {"quantize": "4bit"}, "sample_prompts": []},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    run = tmp_path / "run"

    assert run_trainer(str(tmp_path / "spec.yaml"), str(run)) == 1

    error = json.loads((run / "error.json").read_text())
    assert (error["code"], error["param"]) == ("quantization_unavailable", "training.lora.quantize")
    assert "a 4-bit base needs a CUDA GPU (this worker's torch sees none)" in error["message"]
    assert "remove quantize to train plain LoRA" in error["message"]
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()  # nothing trained
