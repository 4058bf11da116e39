"""The chunked loss (no full-vocabulary logits) gives the plain loss and gradients."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cli.sample_data import chat_examples, write_jsonl
from lmtune.training_data import validate_jsonl_file
from workers.training.data import collate_packed, collate_padded, tokenize_rows
from workers.training.loss import CausalLMLoss


@pytest.fixture(scope="module")
def examples(tiny_model, tmp_path_factory):
    path = write_jsonl(chat_examples(6, seed=3, spread=0.5), tmp_path_factory.mktemp("data") / "train.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    return list(tokenize_rows(validate_jsonl_file(path, 1), tokenizer, 256).examples), tokenizer.pad_token_id


def _loss_and_grads(model, batch, **options):
    model.zero_grad(set_to_none=True)
    sums = CausalLMLoss(model, torch.device("cpu"), **options)(model, batch)
    sums.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return sums, grads


def _model(tiny_model, lora: bool):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
        for name, parameter in model.named_parameters():  # B starts at zero: make A's gradient nonzero
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.02)
    return model


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_chunked_loss_and_gradients_equal_the_plain_ones(tiny_model, examples, packing, lora):
    rows, pad_id = examples
    batch = collate_packed(rows, pad_id, 512) if packing else collate_padded(rows, pad_id)
    plain_sums, plain_grads = _loss_and_grads(_model(tiny_model, lora), batch, chunked=False)
    model = _model(tiny_model, lora)
    chunked_sums, chunked_grads = _loss_and_grads(model, batch, chunk_tokens=7)  # many chunks, a ragged last one
    targets = int(plain_sums.targets)
    assert targets > 7 * 5 and int(chunked_sums.targets) == targets
    assert chunked_sums.loss.item() / targets == pytest.approx(plain_sums.loss.item() / targets, abs=1e-5)
    assert int(chunked_sums.correct) == int(plain_sums.correct)
    assert plain_grads.keys() == chunked_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name] / targets, grad / targets, atol=1e-5, rtol=1e-4, msg=name)
    assert any(g.abs().sum() > 0 for g in chunked_grads.values())
    # the hook only acts during the loss: the model still gives its logits to other callers
    assert model(**{k: v for k, v in batch.items() if k != "labels"}).logits.shape[:2] == batch["input_ids"].shape


def test_a_micro_batch_without_targets_gives_every_parameter_a_zero_gradient(tiny_model, examples):
    rows, pad_id = examples
    batch = collate_padded(rows[:1], pad_id)
    batch["labels"][:] = -100
    sums, grads = _loss_and_grads(_model(tiny_model, lora=False), batch)
    assert sums.loss.item() == 0 and int(sums.targets) == 0
    # every parameter gets a gradient (DDP waits for each one from every process), and it is zero
    assert all(float(g.abs().sum()) == 0 for g in grads.values())
