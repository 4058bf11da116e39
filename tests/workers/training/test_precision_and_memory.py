import pytest
import torch

from tests.helpers import train_losses
from workers.training.loop import _precision, train


def test_gradient_checkpointing_changes_memory_not_numbers(make_spec, chat_file, tmp_path):
    train(make_spec(chat_file, epochs=1), tmp_path / "plain")
    train(make_spec(chat_file, epochs=1, gradient_checkpointing=True), tmp_path / "checkpointed")
    assert train_losses(tmp_path / "checkpointed") == pytest.approx(train_losses(tmp_path / "plain"), rel=1e-5)


@pytest.mark.slow  # trains for many steps or twice
def test_gradient_checkpointing_works_with_lora(make_spec, chat_file, tmp_path):
    lora = {"r": 4, "alpha": 8}
    train(make_spec(chat_file, epochs=1, learning_rate=1e-2, lora=lora), tmp_path / "plain")
    train(make_spec(chat_file, epochs=1, learning_rate=1e-2, lora=lora, gradient_checkpointing=True), tmp_path / "gc")
    assert train_losses(tmp_path / "gc") == pytest.approx(train_losses(tmp_path / "plain"), rel=1e-5)


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
