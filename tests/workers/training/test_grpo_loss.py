"""GRPO's loss and gradients against TRL's GRPOTrainer itself: the same model, fixed sampled answers
(some cut short by their end-of-turn token), advantages and old/reference log-probabilities; every
loss normalisation, with and without the KL term, with ratios far enough from 1 to be clipped."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from workers.training.objectives.grpo_loss import (
    AnswerLogProbs,
    LossOptions,
    answer_logps,
    group_advantages,
    policy_loss,
    token_logps,
)

trl = pytest.importorskip("trl")

GROUP = 4
PROMPT_TOKENS = 6
ANSWER_TOKENS = 7
TEMPERATURE = 0.7


def test_advantages_are_relative_to_the_group_and_scaled_by_its_spread():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    advantages = group_advantages(rewards, 4)
    # group 1: mean 0.5, unbiased std sqrt(1/3) -> +-0.5 / (0.57735 + 1e-4); group 2: all equal -> 0
    assert advantages[:4] == pytest.approx([0.866, -0.866, -0.866, 0.866], abs=1e-3)
    assert advantages[4:].tolist() == [0.0] * 4
    assert group_advantages(rewards, 4, "none")[:4].tolist() == [0.5, -0.5, -0.5, 0.5]
    batch_std = rewards.std().item()
    assert group_advantages(rewards, 4, "batch")[0].item() == pytest.approx(0.5 / (batch_std + 1e-4))


def answers(vocabulary: int, end_id: int, generator: torch.Generator):
    ids = torch.randint(5, vocabulary, (2 * GROUP, ANSWER_TOKENS), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate([7, 3, 5, 1, 7, 2, 6, 4]):  # rows that stopped early: end id, then padding
        if length < ANSWER_TOKENS:
            ids[row, length - 1] = end_id
            ids[row, length:] = end_id
            mask[row, length:] = 0
    return ids, mask


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradients_equal_trl_grpo_trainer(tiny_model, tmp_path, loss_type, beta):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ours_model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    theirs_model = copy.deepcopy(ours_model)
    generator = torch.Generator().manual_seed(1)
    vocabulary = ours_model.config.vocab_size
    prompt_ids = torch.randint(5, vocabulary, (2 * GROUP, PROMPT_TOKENS), generator=generator)
    prompt_mask = torch.ones_like(prompt_ids)
    answer_ids, answer_mask = answers(vocabulary, tokenizer.eos_token_id, generator)
    rewards = torch.tensor([1.0, 0.0, 0.3, 0.9, 0.2, 0.2, 0.8, 0.0])
    advantages = group_advantages(rewards, GROUP)
    with torch.no_grad():
        current = answer_logps(ours_model, prompt_ids, prompt_mask, answer_ids, TEMPERATURE)
    # the policy that sampled them and the reference differ from the current one: ratios get clipped
    old = current + 0.4 * torch.randn(current.shape, generator=generator)
    ref = current + 0.3 * torch.randn(current.shape, generator=generator)
    options = LossOptions(
        epsilon=0.2, epsilon_high=0.28, beta=beta, loss_type=loss_type, max_completion_tokens=ANSWER_TOKENS
    )
    accumulation = 2  # this micro-batch is one of two of equal size in the step
    step_tokens = 1.5 * answer_mask.sum().item()  # the step's answer tokens, both micro-batches'

    ours_model.train()
    logps = answer_logps(ours_model, prompt_ids, prompt_mask, answer_ids, TEMPERATURE)
    ours = policy_loss(logps, answer_mask, advantages, options, old_logps=old, ref_logps=ref if beta else None)
    # the loop divides by the step's units: its answer tokens (dapo) or its answers
    step_units = step_tokens if loss_type == "dapo" else accumulation * answer_ids.size(0)
    loss = ours.loss / step_units
    loss.backward()

    config = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2 * GROUP,
        num_generations=GROUP,
        max_completion_length=ANSWER_TOKENS,
        gradient_accumulation_steps=accumulation,
        temperature=TEMPERATURE,
        beta=beta,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type=loss_type,
        report_to=[],
        use_cpu=True,
        bf16=False,  # TRL's default; the comparison is in fp32
    )
    trainer = GRPOTrainer(
        model=theirs_model,
        reward_funcs=lambda completions, **kwargs: [0.0] * len(completions),
        args=config,
        train_dataset=Dataset.from_list([{"prompt": "q"}] * (2 * GROUP)),
        processing_class=tokenizer,
    )
    trainer.current_gradient_accumulation_steps = accumulation
    trainer.model.train()
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": answer_ids,
        "completion_mask": answer_mask,
        "advantages": advantages,
        "old_per_token_logps": old,
        # the generation batch's answer tokens: one optimizer step's (steps_per_generation = accumulation)
        "num_items_in_batch": torch.tensor(step_tokens),
    }
    if beta:
        inputs["ref_per_token_logps"] = ref
    theirs = trainer._compute_loss(trainer.model, inputs)
    theirs.backward()

    assert loss.item() == pytest.approx(theirs.item(), abs=1e-5)
    assert 0 < ours.clipped.item() < ours.tokens  # the clip was exercised, on some tokens only
    ours_grads, theirs_grads = gradients(ours_model), gradients(trainer.model)
    assert ours_grads.keys() == theirs_grads.keys() and ours_grads
    for name, grad in ours_grads.items():
        assert torch.allclose(grad, theirs_grads[name], atol=1e-5), name


def test_answer_logprobs_in_chunks_equal_those_of_the_whole_logits_with_their_gradients(tiny_model):
    """Several chunks of answer tokens, a left-padded prompt and padded answers: the same values and
    gradients as the full-vocabulary logits give."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    generator = torch.Generator().manual_seed(2)
    prompt_ids = torch.randint(5, model.config.vocab_size, (2 * GROUP, PROMPT_TOKENS), generator=generator)
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[1, :2] = 0  # a shorter prompt, left-padded
    answer_ids, answer_mask = answers(model.config.vocab_size, 2, generator)
    weights = torch.randn(answer_ids.shape, generator=generator)
    ids, mask = torch.cat([prompt_ids, answer_ids], 1), torch.cat([prompt_mask, torch.ones_like(answer_ids)], 1)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    whole = token_logps(logits[:, PROMPT_TOKENS - 1 : -1], answer_ids, TEMPERATURE) * answer_mask
    (whole * weights).sum().backward()
    whole_grads = gradients(model)
    model.zero_grad()

    logps = AnswerLogProbs(model, chunk_tokens=5)(model, prompt_ids, prompt_mask, answer_ids, TEMPERATURE, answer_mask)
    (logps * weights).sum().backward()

    assert torch.allclose(logps, whole, atol=1e-5)
    assert logps[answer_mask == 0].eq(0).all()  # padding: not computed
    chunked_grads = gradients(model)
    assert chunked_grads.keys() == whole_grads.keys() and chunked_grads
    for name, grad in chunked_grads.items():
        assert torch.allclose(grad, whole_grads[name], atol=1e-5), name
