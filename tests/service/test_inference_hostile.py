"""Completions with the edge values of `seed` and `temperature`: refused with a 400 naming the field
where the schema bounds them, served otherwise (never a 500 from the sampler)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.service.test_inference import served, tiny_folder  # noqa: F401 (the fixture)
from workers.models.generation import GenerationParams, generate, prompt_ids

PROMPT = {"model": "lmtune-tiny", "prompt": "alpha bravo", "max_tokens": 6}


def complete(api, **body):
    return api.client.post("/v1/completions", headers=api.alice, json={**PROMPT, **body})


@pytest.mark.parametrize("seed", [2**53, 2**64, -(2**53), 10**30])
def test_a_seed_past_the_safe_integers_is_refused_naming_the_field(served, seed):  # noqa: F811
    response = complete(served, seed=seed, temperature=1.0)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "seed"


@pytest.mark.parametrize("seed", [2**53 - 1, -(2**53 - 1), 0])
def test_every_seed_in_range_is_served_and_repeats_its_answer(served, seed):  # noqa: F811
    first, second = (complete(served, seed=seed, temperature=1.0, n=2) for _ in range(2))
    assert first.status_code == 200, first.text
    assert [c["text"] for c in first.json()["choices"]] == [c["text"] for c in second.json()["choices"]]


@pytest.mark.parametrize("temperature", [1e-300, 6.7e-246, 1e-30, 5e-324])
def test_a_vanishing_temperature_answers_greedily(served, temperature):  # noqa: F811
    greedy = complete(served, temperature=0)
    tiny = complete(served, temperature=temperature, seed=3)
    assert tiny.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]


def test_the_sampler_takes_any_integer_seed(served):  # noqa: F811
    # the model server's own body does not bound the seed: the sampler folds it into torch's range
    complete(served, temperature=0)  # makes lmtune-tiny
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder(served))
    model = AutoModelForCausalLM.from_pretrained(tiny_folder(served))
    ids = prompt_ids(tokenizer, "alpha bravo")
    answers = [
        generate(model, tokenizer, ids, GenerationParams(max_tokens=4, temperature=1.0, seed=seed))[0].text
        for seed in (2**70 + 5, 2**70 + 5, -(2**80))
    ]
    assert answers[0] == answers[1]
    with torch.no_grad():
        assert generate(model, tokenizer, ids, GenerationParams(max_tokens=4, temperature=1e-300))[0].text == (
            generate(model, tokenizer, ids, GenerationParams(max_tokens=4, temperature=0))[0].text
        )
