"""GRPO's rollouts on the tiny model: groups sampled in one batch, each answer from a seed of its own
(so the same answer whatever batch it is generated in), and graded by the job's grader in one batch."""

import pytest
import torch
from pydantic import TypeAdapter
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmtune.graders import Tools
from lmtune.graders.schema import Grader
from workers.models.generation import GenerationParams, end_of_turn_ids, prompt_ids
from workers.training.objectives.grpo_rollouts import answer_seed, grade_rollouts, sample_groups

PARAMS = GenerationParams(max_tokens=12, temperature=1.0)


@pytest.fixture(scope="module")
def policy(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)


def prompts(tokenizer) -> list[list[int]]:
    return [prompt_ids(tokenizer, [{"role": "user", "content": text}]) for text in ("2+2?", "Name a colour.")]


def test_each_prompt_gets_a_group_of_answers_in_one_batch(policy):
    model, tokenizer = policy
    rollouts = sample_groups(model, tokenizer, prompts(tokenizer), 3, PARAMS, range(6))
    assert len(rollouts.answer_ids) == 6
    assert rollouts.prompt_ids[0] == rollouts.prompt_ids[2] != rollouts.prompt_ids[3]
    stops = set(end_of_turn_ids(tokenizer))
    for ids, truncated, text in zip(rollouts.answer_ids, rollouts.truncated, rollouts.texts):
        assert 1 <= len(ids) <= PARAMS.max_tokens
        # an answer that stopped ends with its stop token and has no other; a cut one has none
        assert (ids[-1] in stops) != truncated and not stops & set(ids[:-1])
        assert text == tokenizer.decode([i for i in ids if i not in stops], skip_special_tokens=True)
    assert len({tuple(ids) for ids in rollouts.answer_ids}) > 1  # sampled, not greedy


def test_an_answer_depends_on_its_seed_alone_and_the_global_stream_is_left_alone(policy):
    model, tokenizer = policy
    both = prompts(tokenizer)
    torch.manual_seed(123)
    global_before = torch.get_rng_state()
    together = sample_groups(model, tokenizer, both, 2, PARAMS, [11, 12, 21, 22]).answer_ids
    assert torch.equal(torch.get_rng_state(), global_before)  # dropout's stream did not move
    # the second prompt's answers, alone and in another order, from the same seeds: the same answers
    alone = sample_groups(model, tokenizer, both[1:], 2, PARAMS, [22, 21]).answer_ids
    assert alone == together[2:][::-1]
    # in batches of one row at a time (another padding, another number of rows)
    cut = sample_groups(model, tokenizer, both, 2, PARAMS, [11, 12, 21, 22], max_rows=1).answer_ids
    assert cut == together
    assert sample_groups(model, tokenizer, both, 2, PARAMS, [13, 14, 23, 24]).answer_ids != together


def test_answer_seeds_differ_by_step_row_and_answer_and_not_otherwise():
    seeds = {answer_seed(0, step, row, answer) for step in range(20) for row in range(50) for answer in range(8)}
    assert len(seeds) == 20 * 50 * 8
    assert answer_seed(3, 1, 2, 0) == answer_seed(3, 1, 2, 0) != answer_seed(4, 1, 2, 0)


def test_answers_are_graded_against_their_own_rows_with_each_sub_grader(policy):
    model, tokenizer = policy
    rollouts = sample_groups(model, tokenizer, prompts(tokenizer), 2, PARAMS, range(4))
    rollouts.texts = ["4", "four", "red", "4"]  # what the grader reads, fixed so the scores are known
    grader = TypeAdapter(Grader).validate_python(
        {
            "type": "multi",
            "name": "m",
            "graders": {
                "exact": {
                    "type": "string_check",
                    "name": "exact",
                    "input": "{{sample.output_text}}",
                    "reference": "{{item.answer}}",
                    "operation": "eq",
                },
                "short": {
                    "type": "python",
                    "name": "short",
                    "source": "def grade(sample, item):\n    return 1.0 if len(sample['output_text']) < 4 else 0.0\n",
                },
            },
            "calculate_output": "0.5 * exact + 0.5 * short",
        }
    )
    grade_rollouts(rollouts, [{"answer": "4"}, {"answer": "red"}], 2, grader, Tools())
    assert rollouts.rewards.tolist() == [1.0, 0.0, 1.0, 0.5]
    stats = rollouts.reward_stats()
    assert stats["reward_mean"] == 0.625 and stats["reward_exact_mean"] == 0.5 and stats["reward_short_mean"] == 0.75
    assert stats["reward_std"] == pytest.approx(torch.tensor([1.0, 0.0, 1.0, 0.5]).std().item())
