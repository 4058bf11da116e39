import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.process_memory import peak_rss_mb
from tests.helpers import train_losses
from workers.models.tiny_model import make_tiny_model
from workers.training.loop import _precision, train


@pytest.mark.parametrize("mode", ["selective", "full"])
def test_activation_checkpointing_changes_memory_not_numbers(mode, make_spec, chat_file, tmp_path):
    train(make_spec(chat_file, epochs=1, gradient_checkpointing="off"), tmp_path / "kept")
    train(make_spec(chat_file, epochs=1, gradient_checkpointing=mode), tmp_path / mode)
    assert train_losses(tmp_path / mode) == pytest.approx(train_losses(tmp_path / "kept"), rel=1e-6)


def test_selective_checkpointing_keeps_matrix_products_and_attention_and_recomputes_the_rest():
    from torch.utils.checkpoint import CheckpointPolicy

    from workers.training.activation_checkpointing import _keep_costly_outputs

    aten = torch.ops.aten
    kept = [aten.mm.default, aten.addmm.default, aten._scaled_dot_product_flash_attention_for_cpu.default]
    recomputed = [aten.mul.Tensor, aten.silu.default, aten.rsqrt.default, aten.cat.default]
    assert [_keep_costly_outputs(None, op) for op in kept] == [CheckpointPolicy.MUST_SAVE] * len(kept)
    assert [_keep_costly_outputs(None, op) for op in recomputed] == [CheckpointPolicy.PREFER_RECOMPUTE] * len(
        recomputed
    )


@pytest.mark.slow  # three processes
def test_selective_checkpointing_lowers_the_peak_of_a_step_and_full_lowers_it_most(tmp_path):
    # an MLP 8x the hidden size, as real models have (about 3-4x; SmolLM2 2.7x), so that what
    # `selective` recomputes (the MLP's activations) weighs as it does there: measured off 1,614 MB,
    # selective 1,120 (0.69x), full 616 (0.55x of selective). With the MLP at 4x, selective was 0.80x
    # of off, and allocator noise under load crossed a bound set there (816.7 against 0.8 x 1,014.9).
    model = make_tiny_model(tmp_path / "model", hidden_size=256, num_layers=8, num_heads=4, intermediate_size=2048)
    growth = {mode: _peak_growth_of_one_step(model, mode) for mode in ("off", "selective", "full")}
    assert growth["selective"] < 0.8 * growth["off"], growth  # 0.69x measured: 110 MB of margin at least
    assert growth["full"] < 0.8 * growth["selective"], growth  # 0.55x measured


def _peak_growth_of_one_step(model, mode: str) -> float:
    """MB that one forward and backward of 8 x 512 tokens add to the peak, in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-m", __name__, str(model), mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[3],
    )
    return float(done.stdout.split()[-1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU's choice")
def test_auto_precision_is_fp32_on_the_cpu():
    assert _precision("auto") == "no"
    assert _precision("bf16") == "bf16"


@pytest.mark.slow  # trains for many steps or twice
def test_bf16_autocast_trains_close_to_fp32(make_spec, chat_file, tmp_path):
    train(make_spec(chat_file, epochs=1), tmp_path / "fp32")
    train(make_spec(chat_file, epochs=1, mixed_precision="bf16"), tmp_path / "bf16")
    fp32, bf16 = train_losses(tmp_path / "fp32"), train_losses(tmp_path / "bf16")
    assert bf16 == pytest.approx(fp32, rel=2e-2)
    assert bf16 != fp32  # autocast really ran in bf16


if __name__ == "__main__":  # the child of _peak_growth_of_one_step
    from lmtune.spec import TrainingOptions
    from workers.training.loss import CausalLMLoss
    from workers.training.model_setup import load_model

    model = load_model(sys.argv[1], TrainingOptions(gradient_checkpointing=sys.argv[2])).train()
    ids = torch.randint(3, 261, (8, 512), generator=torch.Generator().manual_seed(0))
    loss = CausalLMLoss(model, "cpu")
    before = peak_rss_mb()
    loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}).loss.backward()
    print(peak_rss_mb() - before)
