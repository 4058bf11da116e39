import os

import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmtune.fence import RunFence
from lmtune.layout import RunLayout, latest_checkpoint, write_manifest
from workers.training import checkpoints as ckpt
from workers.training.loop import Progress, _write_checkpoint


def test_a_checkpoint_gives_the_logits_of_the_model_in_memory(tiny_model, tmp_path):
    accelerator = Accelerator(cpu=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_save_state_pre_hook(lambda models, weights, folder: weights.clear())
    inputs = torch.tensor([list(range(10, 40))])
    model(input_ids=inputs, labels=inputs).loss.backward()
    optimizer.step()  # the weights now differ from the base model's

    layout = RunLayout(tmp_path)
    layout.checkpoints.mkdir()
    folder = _write_checkpoint(
        accelerator,
        model,
        tokenizer,
        layout,
        Progress(step=7, tokens=30, target_tokens=20, elapsed_seconds=1.0),
        keep=3,
        fence=RunFence(layout, None),
    )

    assert folder == tmp_path / "checkpoints" / "step-000007"
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=inputs).logits, model(input_ids=inputs).logits)
    assert ckpt.read_trainer_state(folder)["step"] == 7
    assert AutoTokenizer.from_pretrained(folder)("abc").input_ids == tokenizer("abc").input_ids


def test_only_folders_with_their_final_name_and_manifest_count(tmp_path):
    for name in ["step-000010", "step-000020", ".partial-step-000030"]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    (tmp_path / "step-000040").mkdir()  # no manifest: never finished
    assert latest_checkpoint(tmp_path) == (20, tmp_path / "step-000020")
    ckpt.remove_partials(tmp_path)
    assert not (tmp_path / ".partial-step-000030").exists()


def test_publish_renames_the_whole_folder_into_place(tmp_path):
    partial = ckpt.partial_folder(tmp_path, "step-000005")
    (partial / "sub").mkdir(parents=True)
    (partial / "sub" / "weights.bin").write_bytes(os.urandom(64))
    write_manifest(partial)
    ckpt.publish(partial, tmp_path / "step-000005")
    assert not partial.exists()
    assert latest_checkpoint(tmp_path) == (5, tmp_path / "step-000005")
