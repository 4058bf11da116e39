import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.helpers import train_losses
from workers.training.data import collate_packed
from workers.training.loop import train


def test_no_token_attends_across_an_example_boundary(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    examples = [list(range(10, 27)), list(range(40, 45)), list(range(60, 71))]
    packed = collate_packed([{"input_ids": ids, "labels": ids} for ids in examples], pad_id=0, max_seq_length=64)
    with torch.no_grad():
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        alone = [model(input_ids=torch.tensor([ids])).logits[0] for ids in examples]
    # first-fit-decreasing puts the longest first: 17, 11, 5 tokens
    assert torch.allclose(logits[:17], alone[0], atol=1e-5)
    assert torch.allclose(logits[17:28], alone[2], atol=1e-5)
    assert torch.allclose(logits[28:33], alone[1], atol=1e-5)


def test_packed_rows_never_exceed_max_seq_length():
    examples = [{"input_ids": [1] * n, "labels": [1] * n} for n in (30, 20, 12, 9, 3)]
    batch = collate_packed(examples, pad_id=0, max_seq_length=32)
    assert batch["input_ids"].shape == (3, 32)
    assert int((batch["position_ids"] == 0).sum()) >= 5


def test_packed_and_padded_runs_give_the_same_losses(make_spec, chat_file, valid_file, tmp_path):
    train(make_spec(chat_file, valid_file, epochs=2, max_seq_length=256), tmp_path / "padded")
    train(make_spec(chat_file, valid_file, epochs=2, max_seq_length=256, packing=True), tmp_path / "packed")
    assert train_losses(tmp_path / "packed") == pytest.approx(train_losses(tmp_path / "padded"), abs=1e-4)
