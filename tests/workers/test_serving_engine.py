"""The model server's cache: LoRA adapters over one shared base, least recently used unloading, and
answers equal to transformers' own generation."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from workers.models.generation import GenerationParams, generate, prompt_ids
from workers.serving.engine import ModelCache

PROMPT = [{"role": "user", "content": "alpha bravo"}]
GREEDY = GenerationParams(max_tokens=10)


def make_adapter(base, folder, seed):
    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False),
    )
    model.save_pretrained(folder)
    return str(folder)


def ask(cache, model, prompt=PROMPT, params=GREEDY):
    loads = []
    answer = cache.answer(
        model, prompt, params, lambda seconds, tokens: loads.append(seconds), lambda i, t: None, lambda: False
    )
    return answer.choices[0].text, loads[0]


def reference(folder_or_model, tokenizer_folder, prompt=PROMPT, tokens=10):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    model = (
        AutoModelForCausalLM.from_pretrained(folder_or_model) if isinstance(folder_or_model, str) else folder_or_model
    )
    ids = prompt_ids(tokenizer, prompt)
    output = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=tokens)
    return tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True)


def test_adapters_share_one_loaded_base_and_answer_as_their_merged_models(tiny_model, tmp_path):
    base = {"source": str(tiny_model)}
    first, second = make_adapter(tiny_model, tmp_path / "a", 1), make_adapter(tiny_model, tmp_path / "b", 2)
    cache = ModelCache(device="cpu", max_models=3, max_bytes=1 << 30)
    plain, _ = ask(cache, base)
    with_first, _ = ask(cache, {"source": first, "adapter": first, "base": base})
    with_second, loaded = ask(cache, {"source": second, "adapter": second, "base": base})
    assert cache.loaded == [str(tiny_model), f"{tiny_model}+{first}", f"{tiny_model}+{second}"]
    assert loaded > 0 and len({plain, with_first, with_second}) == 3
    for adapter, answer in ((first, with_first), (second, with_second)):
        merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter).merge_and_unload()
        assert answer == reference(merged, tiny_model)
    assert ask(cache, base)[0] == plain == reference(str(tiny_model), tiny_model)  # the base alone, adapters aside


def test_the_least_recently_used_model_is_unloaded_first(tiny_model, tmp_path):
    adapters = [make_adapter(tiny_model, tmp_path / name, seed) for seed, name in enumerate("abc")]
    base = {"source": str(tiny_model)}
    cache = ModelCache(device="cpu", max_models=3, max_bytes=1 << 30)
    for adapter in adapters[:2]:
        ask(cache, {"source": adapter, "adapter": adapter, "base": base})
    ask(cache, {"source": adapters[0], "adapter": adapters[0], "base": base})  # a is used again: b is now the oldest
    _, load_seconds = ask(cache, {"source": adapters[2], "adapter": adapters[2], "base": base})
    assert cache.loaded == [str(tiny_model), f"{tiny_model}+{adapters[0]}", f"{tiny_model}+{adapters[2]}"]
    assert ask(cache, {"source": adapters[0], "adapter": adapters[0], "base": base})[1] < load_seconds

    small = ModelCache(device="cpu", max_models=1, max_bytes=1 << 30)
    other = tmp_path / "other"
    AutoModelForCausalLM.from_pretrained(tiny_model).save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(other)
    ask(small, base)
    ask(small, {"source": str(other)})
    assert small.loaded == [str(other)]


def test_memory_bounds_what_stays_loaded(tiny_model, tmp_path):
    other = tmp_path / "other"
    AutoModelForCausalLM.from_pretrained(tiny_model).save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(other)
    one_model = sum(p.stat().st_size for p in other.glob("*.safetensors"))
    cache = ModelCache(device="cpu", max_models=10, max_bytes=int(one_model * 1.5))
    ask(cache, {"source": str(tiny_model)})
    ask(cache, {"source": str(other)})
    assert cache.loaded == [str(other)]


def test_answers_under_way_take_turns_and_each_stays_what_it_would_be_alone(tiny_model, tmp_path):
    base = {"source": str(tiny_model)}
    adapter = make_adapter(tiny_model, tmp_path / "a", 1)
    tuned = {"source": adapter, "adapter": adapter, "base": base}
    cache = ModelCache(device="cpu", max_models=3, max_bytes=1 << 30)
    short, long = GenerationParams(max_tokens=20), GenerationParams(max_tokens=400)
    alone = ask(cache, base, params=short)[0], ask(cache, tuned, params=long)[0]

    # a long answer of the fine-tuned model is under way; a short one of the base is asked meanwhile
    begun = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        long_answer = pool.submit(
            cache.answer, tuned, PROMPT, long, lambda *_: None, lambda index, text: begun.set(), lambda: False
        )
        begun.wait()
        short_answer = ask(cache, base, params=short)[0]
        finished_first = not long_answer.done()  # the short one did not wait for the long one's end
        interleaved = long_answer.result().choices[0].text
    assert finished_first
    # step by step in turn, the base alone and the adapter over it, each answer is what it is alone
    assert (short_answer, interleaved) == alone


@pytest.mark.slow
def test_greedy_answers_of_smollm2_are_what_transformers_generates(smollm2):
    cache = ModelCache(device="cpu", max_models=1, max_bytes=2 << 30)
    prompt = [{"role": "user", "content": "What is the capital of France?"}]
    answer, _ = ask(cache, {"source": str(smollm2)}, prompt, GenerationParams(max_tokens=20))
    assert answer == reference(str(smollm2), smollm2, prompt, tokens=20)
    assert "Paris" in answer  # real weights, real tokenizer and chat template


def test_a_sampled_answer_draws_from_every_token_not_only_the_50_most_likely(tiny_model):
    # generate() fills in a top-k of 50 unless told otherwise; OpenAI's sampling (temperature,
    # top_p) has no such cut, and reinforcement training's loss assumes the whole softmax
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = prompt_ids(tokenizer, PROMPT)
    params = GenerationParams(max_tokens=1, temperature=1.0, n=300, seed=0)
    first_words = {choice.text for choice in generate(model, tokenizer, ids, params, stop_ids=[])}
    # a random model is near uniform over its 261 tokens (about 90 distinct texts in 300 draws:
    # the bytes above 127 all read as one replacement character); a top-k of 50 gives at most 50
    assert len(first_words) > 60
