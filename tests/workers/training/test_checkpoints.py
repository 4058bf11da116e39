import os
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmtune.fence import RunFence
from lmtune.layout import RunLayout, latest_checkpoint, read_manifest, write_manifest
from workers.training import checkpoints as ckpt
from workers.training.loop import Progress, _write_checkpoint

INPUTS = torch.tensor([list(range(10, 40))])


def one_step_trained(tiny_model):
    """An Accelerate-prepared model whose weights, after one step, differ from the base model's."""
    accelerator = Accelerator(cpu=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_save_state_pre_hook(lambda models, weights, folder: weights.clear())
    model(input_ids=INPUTS, labels=INPUTS).loss.backward()
    optimizer.step()
    return accelerator, model


def write_checkpoint(accelerator, model, tokenizer, run: Path, step: int) -> Path:
    layout = RunLayout(run)
    layout.checkpoints.mkdir()
    progress = Progress(step=step, tokens=30, target_tokens=20, elapsed_seconds=1.0)
    return _write_checkpoint(accelerator, model, tokenizer, layout, progress, keep=3, fence=RunFence(layout, None))


def test_a_checkpoint_gives_the_logits_of_the_model_in_memory(tiny_model, tmp_path):
    accelerator, model = one_step_trained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)

    folder = write_checkpoint(accelerator, model, tokenizer, tmp_path, step=7)

    assert folder == tmp_path / "checkpoints" / "step-000007"
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=INPUTS).logits, model(input_ids=INPUTS).logits)
    assert ckpt.read_trainer_state(folder)["step"] == 7
    assert AutoTokenizer.from_pretrained(folder)("abc").input_ids == tokenizer("abc").input_ids


def test_a_checkpoint_is_published_only_once_every_process_has_written_its_part(tiny_model, tmp_path):
    """Another process (on another node, say) still writing its RNG state when the main process is
    done with its own: the checkpoint appears, complete, only after that process reached the barrier."""
    accelerator, model = one_step_trained(tiny_model)
    late = []  # what the other process writes before it reaches the next barrier
    save_state, barrier = accelerator.save_state, accelerator.wait_for_everyone

    def save_state_with_a_slow_peer(folder):
        save_state(folder)
        late.append(Path(folder) / "random_states_1.pkl")

    def wait_for_the_slow_peer():
        while late:
            late.pop().write_bytes(os.urandom(64))
        barrier()

    accelerator.save_state, accelerator.wait_for_everyone = save_state_with_a_slow_peer, wait_for_the_slow_peer
    folder = write_checkpoint(accelerator, model, AutoTokenizer.from_pretrained(tiny_model), tmp_path, step=3)

    assert "training_state/random_states_1.pkl" in read_manifest(folder)
    assert "training_state/random_states_0.pkl" in read_manifest(folder)


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
