"""lmtune's per-step loss against transformers.Trainer on the same model, data and options."""

import pytest

from benchmarks.hf_reference import run_hf_trainer
from tests.helpers import train_losses
from workers.training.loop import train

pytestmark = pytest.mark.slow  # runs transformers.Trainer beside lmtune


@pytest.mark.parametrize("accumulation", [1, 2])
def test_per_step_loss_matches_transformers_trainer(make_spec, chat_file, tmp_path, accumulation):
    spec = make_spec(
        chat_file,
        batch_size=8,
        epochs=2,
        learning_rate=2e-3,
        weight_decay=0.01,
        warmup_ratio=0.2,
        gradient_accumulation_steps=accumulation,
    )
    train(spec, tmp_path / "lmtune")
    ours = train_losses(tmp_path / "lmtune")
    theirs = run_hf_trainer(spec, tmp_path / "hf").losses
    assert len(ours) == len(theirs) == 8
    assert ours == pytest.approx(theirs, rel=1e-3)
    assert ours[-1] < ours[0]  # it trained, so the match is not of two untouched models
