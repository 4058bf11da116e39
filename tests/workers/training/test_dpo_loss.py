"""DPO's loss and rewards equal TRL's DPOTrainer on the same pairs and models; the log-probabilities
are chunked (no full-vocabulary logits) and give the plain computation's values and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cli.sample_data import TOOLS, preference_examples
from lmtune.training_data import Row
from workers.training.data import IGNORE_INDEX
from workers.training.dpo_loss import SequenceLogProbs, dpo_sums
from workers.training.preference_data import collate_pairs_packed, tokenize_pairs

CPU = torch.device("cpu")
MAX_LENGTH = 2048  # the tool pair's prompt (the tools in the system turn, a byte a token) fits
TOOL_PAIR = {
    "input": {"messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": TOOLS},
    "preferred_output": [
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
            ],
        }
    ],
    "non_preferred_output": [{"role": "assistant", "content": "No idea."}],
}


def _model(folder, seed: int | None = None):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if seed is not None:  # another model: a reference that is not the policy
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return model


@pytest.fixture(scope="module")
def pairs():
    """Text pairs and pairs that call tools (which a template without tools renders in lmtune's
    fallback format: TRL hands them to the template, which drops them, so TRL compares on text)."""
    return [*preference_examples(6, seed=5, spread=0.5), TOOL_PAIR, TOOL_PAIR]


def collate_pairs(pairs: list[dict], pad_id: int) -> dict:
    """The padded layout (a sequence a row, as TRL pads): what the packed rows lmtune trains on are
    checked against."""
    sequences = [(p["prompt_ids"], p[side]) for side in ("chosen_ids", "rejected_ids") for p in pairs]
    width = max(len(prompt) + len(completion) for prompt, completion in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, (prompt, completion) in enumerate(sequences):
        n, total = len(prompt), len(prompt) + len(completion)
        input_ids[i, :total] = torch.tensor(prompt + completion)
        labels[i, n:total] = torch.tensor(completion)
        attention_mask[i, :total] = 1
    index = torch.arange(len(sequences)).unsqueeze(1).expand(-1, width).contiguous()
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "sequence_index": index,
        "sequences": len(sequences),
    }


def _ours(policy, reference, rows, tokenizer, beta: float, chunk_tokens: int | None = None):
    data = tokenize_pairs([Row(i, "preference", row) for i, row in enumerate(rows)], tokenizer, MAX_LENGTH)
    assert len(data) == len(rows)
    batch = collate_pairs(list(data.examples), tokenizer.pad_token_id)
    half = len(rows)
    logps = SequenceLogProbs(policy, CPU, chunk_tokens=chunk_tokens)(policy, batch)
    with torch.no_grad():
        ref = SequenceLogProbs(reference, CPU)(reference, batch)
    return dpo_sums(logps[:half], logps[half:], ref[:half], ref[half:], beta), batch


def test_loss_and_rewards_equal_trl(tiny_model, pairs, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    beta = 0.3
    pairs = [pair for pair in pairs if "tools" not in pair["input"]]
    policy, reference = _model(tiny_model), _model(tiny_model, seed=1)
    ours, _ = _ours(policy, reference, pairs, tokenizer, beta)

    rows = [
        {
            "prompt": row["input"]["messages"],
            "chosen": row["preferred_output"],
            "rejected": row["non_preferred_output"],
        }
        for row in pairs
    ]
    config = DPOConfig(  # fp32 as ours (TRL's default is bf16)
        output_dir=str(tmp_path), beta=beta, max_length=MAX_LENGTH, report_to=[], use_cpu=True, bf16=False
    )
    trainer = DPOTrainer(
        model=_model(tiny_model),
        ref_model=_model(tiny_model, seed=1),
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    trainer.model.train()  # TRL logs its rewards/* under "train" then
    trl_loss = trainer.compute_loss(trainer.model, batch)
    logged = {key: sum(values) / len(values) for key, values in trainer._metrics["train"].items()}

    assert ours.loss.item() / ours.pairs == pytest.approx(trl_loss.item(), abs=1e-5)
    assert abs(trl_loss.item() - math.log(2)) > 1e-3  # the reference differs from the policy
    assert ours.chosen_rewards.item() / ours.pairs == pytest.approx(logged["rewards/chosen"], abs=1e-5)
    assert ours.rejected_rewards.item() / ours.pairs == pytest.approx(logged["rewards/rejected"], abs=1e-5)
    assert ours.correct.item() / ours.pairs == pytest.approx(logged["rewards/accuracies"], abs=1e-6)


def test_the_first_loss_is_ln_2_when_the_model_is_its_reference(tiny_model, pairs):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = _model(tiny_model)
    sums, _ = _ours(model, model, pairs, tokenizer, beta=0.1)
    assert sums.loss.item() / sums.pairs == pytest.approx(math.log(2), abs=1e-6)
    assert sums.chosen_rewards.item() == sums.rejected_rewards.item() == 0


def test_chunked_log_probs_equal_the_plain_ones_with_their_gradients(tiny_model, pairs):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    reference = _model(tiny_model, seed=2)
    results = []
    for chunk_tokens in (7, 10**9):  # many chunks with a ragged last one, and one chunk
        policy = _model(tiny_model)
        sums, batch = _ours(policy, reference, pairs, tokenizer, 0.5, chunk_tokens=chunk_tokens)
        sums.loss.backward()
        results.append((sums.loss.item(), {n: p.grad.clone() for n, p in policy.named_parameters()}))
    plain_model = _model(tiny_model)
    head = plain_model.get_output_embeddings()
    logps = SequenceLogProbs(plain_model, CPU, chunked=False)  # the whole logits
    half = len(pairs)
    mine = logps(plain_model, batch)
    with torch.no_grad():
        ref = SequenceLogProbs(reference, CPU)(reference, batch)
    plain = dpo_sums(mine[:half], mine[half:], ref[:half], ref[half:], 0.5)
    plain.loss.backward()
    assert head.weight.grad is not None
    for loss, grads in results:
        assert loss == pytest.approx(plain.loss.item(), abs=1e-5)
        for name, parameter in plain_model.named_parameters():
            torch.testing.assert_close(grads[name], parameter.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_completions_are_labelled_and_nothing_else(tiny_model, pairs):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    data = tokenize_pairs([Row(1, "preference", pairs[0])], tokenizer, MAX_LENGTH)
    batch = collate_pairs(list(data.examples), tokenizer.pad_token_id)
    labelled = [tokenizer.decode(row[row != -100]) for row in batch["labels"]]
    assert labelled == [
        pairs[0]["preferred_output"][0]["content"] + "<|im_end|>\n",
        pairs[0]["non_preferred_output"][0]["content"] + "<|im_end|>\n",
    ]
    assert batch["sequences"] == 2 and batch["sequence_index"].tolist()[1][0] == 1


def test_every_method_a_job_may_name_has_an_objective():
    from lmtune.methods import METHODS
    from workers.training.objectives import OBJECTIVES

    assert set(OBJECTIVES) == set(METHODS)


def test_packed_pairs_give_the_log_probabilities_of_padded_ones(tiny_model, pairs):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    data = list(
        tokenize_pairs([Row(i, "preference", row) for i, row in enumerate(pairs)], tokenizer, MAX_LENGTH).examples
    )
    model = _model(tiny_model)
    padded = collate_pairs(data, tokenizer.pad_token_id)
    packed = collate_pairs_packed(data, tokenizer.pad_token_id, MAX_LENGTH)
    assert len(packed["input_ids"]) < len(padded["input_ids"])  # several sequences share a row
    with torch.no_grad():
        torch.testing.assert_close(
            SequenceLogProbs(model, CPU)(model, packed),
            SequenceLogProbs(model, CPU)(model, padded),
            atol=1e-4,
            rtol=1e-5,
        )
