"""A fine-tuned SmolLM2 runs elsewhere as it does here.

- Exported as GGUF, in llama.cpp (the llama-cpp-python package, built from source by
  scripts/llama-cpp): it reads the prompts to the same tokens with the embedded vocabulary and chat
  template, and its greedy answers to held-out prompts are the Hugging Face model's (f16: the same
  tokens on at least 95% of prompts, q8_0: 90%, a known shortfall); token by token, given that model's
  own answer so far, llama.cpp's next token is its (f16: 99% of tokens, q8_0: 95%); transformers' own
  GGUF loader reads the f16 weights back to 1e-3 (relative).
- Served by llama.cpp's own `llama-server --jinja` (built by scripts/llama-server): its Jinja renders
  the chat template embedded in the f16 file as transformers renders the model's, and its greedy
  answers are the Hugging Face model's on at least 95% of prompts.
- Made into an Ollama model from the f16 file and its Modelfile with `ollama create` (IPEX-LLM's
  build of Ollama 0.5.4 on the CPU, installed by scripts/ollama): the Modelfile's template renders
  each chat as the model's own template does, and its greedy answers are the Hugging Face model's on
  at least 95% of prompts.
- Downloaded as it is, in vLLM (its CPU build, installed by scripts/vllm-cpu): the merged model
  served alone, and the LoRA adapter served on its base with `--enable-lora`, render the chat to the
  same prompt tokens and answer with the same greedy tokens on at least 95% of prompts.

The model is fine-tuned first (a few LoRA steps, gentle enough that it still answers each prompt
in its own words, so that the comparison is not of one memorised answer), and what is exported or
served holds that run's weights, not the pretrained ones."""

import ast
import os
import re
import signal
import subprocess
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch

from cli.sample_data import chat_examples, write_jsonl
from lmtune.spec import parse_spec
from tests.waiting import wait_for_exit, wait_while_progressing, working
from workers.models.generation import end_of_turn_ids, prompt_ids, render_chat
from workers.models.gguf_export import write_gguf
from workers.models.ollama_modelfile import modelfile
from workers.ports import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
MAX_TOKENS = 24
HELD_OUT = [
    "How far away is Mars?",
    "What is the capital of France?",
    "Write one sentence about autumn.",
    "Name three primary colours.",
    "What does a compiler do?",
    "Give me a synonym for happy.",
    "Why do leaves change colour?",
    "How many legs does a spider have?",
    "What is 12 times 7?",
    "Describe a sunrise in five words.",
    "Who wrote Romeo and Juliet?",
    "What is photosynthesis?",
    "Suggest a name for a small dog.",
    "What is the boiling point of milk?",
    "Translate 'good morning' into Spanish.",
    "What is a prime number?",
    "Tell me a fact about owls.",
    "What should I pack for a beach day?",
    "Explain gravity to a child.",
    "What is the largest ocean?",
]


@pytest.fixture(scope="module")
def fine_tuned(smollm2, tmp_path_factory) -> Path:
    """SmolLM2 after 4 LoRA steps: its final folder (the merged model)."""
    from workers.training.loop import train

    folder = tmp_path_factory.mktemp("smollm2-run")
    data = write_jsonl(chat_examples(32, seed=1), folder / "train.jsonl")  # "answer in capitals" rows
    spec = parse_spec(
        {
            "model": str(smollm2),
            "training_file": str(data),
            "seed": 0,
            "hyperparameters": {"n_epochs": 1, "batch_size": 4},
            "training": {
                "learning_rate": 1e-3,
                "lora": {"r": 8},
                "max_steps": 4,
                "lr_scheduler": "constant",
                "sample_prompts": [],
            },
        }
    )
    train(spec, folder / "run", model_name="smollm2-135m-instruct")
    return folder / "run" / "final"


@pytest.fixture(scope="module")
def hf_answers(fine_tuned):
    """The Hugging Face model's greedy answers (token ids) and prompts, ended at the end of the turn."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(fine_tuned)
    model = AutoModelForCausalLM.from_pretrained(fine_tuned, dtype=torch.float32).eval()
    stops = set(end_of_turn_ids(tokenizer))
    prompts, answers = [], []
    for question in HELD_OUT:
        ids = prompt_ids(tokenizer, [{"role": "user", "content": question}])
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False)[0][len(ids) :]
        answer = []
        for token in out.tolist():
            if token in stops:
                break
            answer.append(token)
        prompts.append(ids)
        answers.append(answer)
    return tokenizer, prompts, answers, stops


def llama_cpp_answers(llama_cpp, gguf: Path, tokenizer, stops) -> tuple[list[list[int]], list[list[int]]]:
    """llama.cpp's own tokens for each rendered prompt, and its greedy answers to them."""
    model = llama_cpp.Llama(str(gguf), n_ctx=512, n_threads=2, verbose=False, seed=0)
    assert model.metadata["tokenizer.chat_template"] == tokenizer.chat_template
    prompts, answers = [], []
    for question in HELD_OUT:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        ids = model.tokenize(text.encode(), add_bos=False, special=True)
        answer = []
        for token in model.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
            if token in stops or len(answer) == MAX_TOKENS:
                break
            answer.append(token)
        prompts.append(ids)
        answers.append(answer)
    return prompts, answers


Q8_0_SHORT = pytest.mark.xfail(
    strict=True,
    reason="issue 23 asks 90%; measured 2026-12-06: 13/20 (this fine-tune) and 9/20 (pretrained SmolLM2), "
    "with f16 embeddings 10/20; llama.cpp's own convert_hf_to_gguf.py --outtype q8_0 writes the same tensors "
    "byte for byte and gives the same 13/20: a 135M model's greedy answers flip at near-ties under Q8_0 "
    "(docs/benchmarks.md)",
)


@pytest.mark.parametrize("quantization, at_least", [("f16", 0.95), pytest.param("q8_0", 0.90, marks=Q8_0_SHORT)])
def test_llama_cpp_answers_as_the_hugging_face_model(
    llama_cpp, fine_tuned, hf_answers, quantization, at_least, tmp_path
):
    tokenizer, hf_prompts, hf_greedy, stops = hf_answers
    gguf = tmp_path / f"smollm2-{quantization}.gguf"
    write_gguf(fine_tuned, gguf, quantization, "ft:smollm2-135m-instruct:test")
    prompts, answers = llama_cpp_answers(llama_cpp, gguf, tokenizer, stops)
    assert prompts == hf_prompts  # the vocabulary, pre-tokenizer and special tokens are llama.cpp's too
    same = sum(a == b for a, b in zip(answers, hf_greedy))
    print(f"{quantization}: {same}/{len(HELD_OUT)} greedy answers identical ({gguf.stat().st_size:,} bytes)")
    assert same >= at_least * len(HELD_OUT), [tokenizer.decode(a) for a in answers]
    assert len({tuple(a) for a in hf_greedy}) >= 15  # answers of their own, not one memorised line


def next_token_agreement(llama_cpp, gguf: Path, prompts: list[list[int]], answers: list[list[int]]) -> float:
    """The share of answer tokens that llama.cpp, given the Hugging Face model's own prompt and answer
    so far, also finds most likely: a near-tie flips one token here, where it parts a whole answer."""
    model = llama_cpp.Llama(str(gguf), n_ctx=512, n_threads=2, logits_all=True, verbose=False, seed=0)
    agreeing = 0
    try:
        for prompt, answer in zip(prompts, answers):
            model.reset()
            model.eval(prompt + answer)
            predicted = model.scores[len(prompt) - 1 : len(prompt) - 1 + len(answer)].argmax(axis=-1)
            agreeing += int((predicted == answer).sum())
    finally:
        model.close()
    return agreeing / sum(len(answer) for answer in answers)


# measured 2026-12-07: f16 99.7% and q8_0 97.0% of 328 tokens (Q8_0 weights alone, in transformers:
# 98.5%); each token q8_0 changed was one where transformers' top two logits were within 0.46
@pytest.mark.parametrize("quantization, at_least", [("f16", 0.99), ("q8_0", 0.95)])
def test_llama_cpp_finds_the_hugging_face_model_s_next_token(
    llama_cpp, fine_tuned, hf_answers, quantization, at_least, tmp_path
):
    """What the q8_0 file's whole answers cannot show (they part at near-ties, and its test above is
    a known shortfall): that llama.cpp computes the fine-tuned model from it, token by token."""
    _, hf_prompts, hf_greedy, _ = hf_answers
    gguf = tmp_path / f"smollm2-{quantization}.gguf"
    write_gguf(fine_tuned, gguf, quantization, "ft:smollm2-135m-instruct:test")
    agreement = next_token_agreement(llama_cpp, gguf, hf_prompts, hf_greedy)
    print(f"{quantization}: llama.cpp's next token is transformers' on {agreement:.1%} of answer tokens")
    assert agreement >= at_least


def installed(script: str) -> Path:
    """What scripts/<script> installs (or builds) once, by the path the script prints; later runs only print it."""
    made = subprocess.run([str(ROOT / "scripts" / script)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(made.stdout.split()[-1])


@contextmanager
def running(command: list[str], environment: dict, log: Path, answering: Callable[[], bool], what: str):
    """`command` in a session of its own (with the processes it starts) until `answering()`; stopped after."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )

    def ready() -> bool:
        assert process.poll() is None, log.read_text()[-4000:]
        return answering()

    try:  # loading and profiling show no sign of life but CPU time
        wait_while_progressing(ready, bool, progress=lambda _: working(process.pid), what=what)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its engine or runner processes
        wait_for_exit(process, f"{what}: the server to stop")


def answers_ok(url: str) -> Callable[[], bool]:
    """Whether a server answers `url` with 200 yet (a probe for `running`)."""

    def probe() -> bool:
        try:
            return httpx.get(url).status_code == 200
        except httpx.ConnectError:
            return False

    return probe


@pytest.fixture(scope="module")
def llama_server() -> Path:
    """llama.cpp's `llama-server`."""
    return installed("llama-server")


def test_llama_server_renders_the_embedded_template_and_answers_as_the_hugging_face_model(
    llama_server, fine_tuned, hf_answers, tmp_path
):
    import openai

    tokenizer, hf_prompts, hf_greedy, _ = hf_answers
    gguf = tmp_path / "ft-f16.gguf"
    write_gguf(fine_tuned, gguf, "f16", "ft:smollm2-135m-instruct:test")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # the command docs/deploy-elsewhere.md gives: the chat template comes from the file, read by llama.cpp's Jinja
    command = [str(llama_server), "-m", str(gguf), "--jinja", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--threads", "2", "--ctx-size", "1024"]
    chats = [[{"role": "user", "content": question}] for question in HELD_OUT]
    log = tmp_path / "llama-server.log"
    with running(command, dict(os.environ), log, answers_ok(f"{url}/health"), "llama-server answering"):
        rendered = [httpx.post(f"{url}/apply-template", json={"messages": chat}).json()["prompt"] for chat in chats]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
        completions = [
            client.chat.completions.create(model="ft", messages=chat, temperature=0, max_tokens=MAX_TOKENS)
            for chat in chats
        ]
    assert rendered == [render_chat(tokenizer, chat, generation_prompt=True) for chat in chats]
    assert [c.usage.prompt_tokens for c in completions] == [len(ids) for ids in hf_prompts]  # no BOS added
    answers = [c.choices[0].message.content for c in completions]
    same = sum(a == tokenizer.decode(b) for a, b in zip(answers, hf_greedy))
    print(f"llama-server, f16: {same}/{len(HELD_OUT)} greedy answers identical")
    assert same >= 0.95 * len(HELD_OUT), answers


def test_transformers_reads_the_f16_weights_back(fine_tuned, smollm2, tmp_path):
    from transformers import AutoModelForCausalLM

    write_gguf(fine_tuned, tmp_path / "model.gguf", "f16", "ft:smollm2-135m-instruct:test")
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf").state_dict()
    expected = AutoModelForCausalLM.from_pretrained(fine_tuned).state_dict()
    assert set(back) == set(expected)
    for name, weights in expected.items():  # f16 keeps 11 significant bits: a relative error under 4.9e-4
        torch.testing.assert_close(back[name].float(), weights, rtol=1e-3, atol=1e-3, msg=name)
    # the fine-tune's change is in the file: over the weights LoRA moved, the file's are several times
    # nearer the fine-tuned values than the base's are (9x measured on the first q_proj; f16 rounding is the rest)
    base = AutoModelForCausalLM.from_pretrained(smollm2).state_dict()
    moved = [k for k in expected if not torch.equal(base[k], expected[k])]
    assert moved
    error = sum((back[name].float() - expected[name]).abs().mean() for name in moved)
    change = sum((base[name] - expected[name]).abs().mean() for name in moved)
    assert error < change / 4, (float(error), float(change))


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    """The python of vLLM's own environment."""
    return installed("vllm-cpu") / "bin" / "python"


@contextmanager
def vllm_serving(python: Path, log: Path, *args: str):
    """vLLM's OpenAI-compatible server on the CPU, in fp32 as the Hugging Face model here: an openai client
    of it once it answers. (The package's `vllm` command fails looking up its own version under the
    name `vllm`; this module is the server that command starts.)"""
    import openai

    port = free_port()
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--dtype", "float32", "--enforce-eager", "--max-model-len", "1024", *args]
    # VLLM_HOST_IP: its engine's own messages stay on loopback too (it takes the machine's address otherwise)
    environment = {**os.environ, "VLLM_HOST_IP": "127.0.0.1", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)

    def answering() -> bool:
        try:
            client.models.list()
        except openai.APIConnectionError:
            return False
        return True

    with running(command, environment, log, answering, "vLLM answering"):
        yield client


def vllm_answers(client, model: str, stops: set[int]) -> tuple[list[list[int]], list[list[int]]]:
    """vLLM's prompt tokens for each held-out question's chat, and its greedy answers to them."""
    prompts, answers = [], []
    for question in HELD_OUT:
        completion = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            temperature=0,
            max_tokens=MAX_TOKENS,
            extra_body={"stop_token_ids": sorted(stops), "return_token_ids": True},
        )
        answer = completion.choices[0].model_extra["token_ids"]
        prompts.append(completion.model_extra["prompt_token_ids"])
        answers.append([token for token in answer if token not in stops])
    return prompts, answers


def test_vllm_serves_the_merged_download_as_the_hugging_face_model(vllm_python, fine_tuned, hf_answers, tmp_path):
    tokenizer, hf_prompts, hf_greedy, stops = hf_answers
    with vllm_serving(
        vllm_python, tmp_path / "vllm.log", "--model", str(fine_tuned), "--served-model-name", "ft"
    ) as client:
        prompts, answers = vllm_answers(client, "ft", stops)
    assert prompts == hf_prompts  # the folder's chat template and tokenizer are what vLLM renders with
    same = sum(a == b for a, b in zip(answers, hf_greedy))
    print(f"vLLM, merged: {same}/{len(HELD_OUT)} greedy answers identical")
    assert same >= 0.95 * len(HELD_OUT), [tokenizer.decode(a) for a in answers]


def test_vllm_serves_the_lora_adapter_on_its_base_as_the_hugging_face_model(
    vllm_python, fine_tuned, hf_answers, smollm2, tmp_path
):
    tokenizer, hf_prompts, hf_greedy, stops = hf_answers
    adapter = fine_tuned / "adapter"
    serving = ["--model", str(smollm2), "--served-model-name", "base", "--enable-lora", "--max-lora-rank", "8"]
    with vllm_serving(vllm_python, tmp_path / "vllm.log", *serving, "--lora-modules", f"ft={adapter}") as client:
        prompts, answers = vllm_answers(client, "ft", stops)
        _, base_answers = vllm_answers(client, "base", stops)
    assert prompts == hf_prompts
    same = sum(a == b for a, b in zip(answers, hf_greedy))
    print(f"vLLM, adapter on its base: {same}/{len(HELD_OUT)} greedy answers identical")
    assert same >= 0.95 * len(HELD_OUT), [tokenizer.decode(a) for a in answers]
    assert base_answers != answers  # the adapter is applied: the base alone answers otherwise


@pytest.fixture(scope="module")
def ollama() -> Path:
    """The `ollama` command."""
    return installed("ollama")


@contextmanager
def ollama_serving(ollama: Path, models: Path, log: Path):
    """`ollama serve` on a port of its own, keeping its models in `models` and logging each chat's
    rendered prompt (OLLAMA_DEBUG): its address, and the environment that points `ollama` at it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(models), "OLLAMA_DEBUG": "1"}
    with running([str(ollama), "serve"], environment, log, answers_ok(url), "Ollama answering"):
        yield url, environment


def ollama_chat(url: str, model: str, messages: list[dict], max_tokens: int = MAX_TOKENS) -> str:
    """Ollama's greedy answer. A batch under 32 tokens keeps the work on llama.cpp's CPU backend
    (scripts/ollama says why); it changes how the prompt is split into batches, not the model or the prompt."""
    options = {"temperature": 0, "num_predict": max_tokens, "num_batch": 16}
    body = {"model": model, "messages": messages, "stream": False, "options": options}
    answer = httpx.post(f"{url}/api/chat", json=body, timeout=600)
    assert answer.status_code == 200, answer.text
    return answer.json()["message"]["content"]


def rendered_prompts(log: Path) -> list[str]:
    """The prompts Ollama rendered for its chats, in order (its debug log quotes them as Go does,
    with escapes that a Python string literal reads the same)."""
    quoted = re.findall(r'msg="chat request" .*?prompt=("(?:[^"\\]|\\.)*")', log.read_text())
    return [ast.literal_eval(prompt) for prompt in quoted]


def test_ollama_makes_a_model_of_the_gguf_export_that_answers_as_the_hugging_face_model(
    ollama, fine_tuned, hf_answers, tmp_path
):
    tokenizer, _, hf_greedy, _ = hf_answers
    export = tmp_path / "gguf"  # what the export runner writes for a download
    export.mkdir()
    write_gguf(fine_tuned, export / "ft-f16.gguf", "f16", "ft:smollm2-135m-instruct:test")
    (export / "Modelfile").write_text(modelfile(tokenizer, "ft-f16.gguf", fine_tuned))
    chats = [[{"role": "user", "content": question}] for question in HELD_OUT]
    french = {"role": "system", "content": "Answer in French."}
    more = [  # the TEMPLATE over other shapes: the user's own system message, first or later, and several turns
        [french, {"role": "user", "content": HELD_OUT[1]}],
        [*chats[0], {"role": "assistant", "content": "Far."}, {"role": "user", "content": "How far exactly?"}],
        [*chats[0], {"role": "assistant", "content": "Far."}, french, {"role": "user", "content": "How far?"}],
    ]
    log = tmp_path / "ollama.log"
    with ollama_serving(ollama, tmp_path / "models", log) as (url, environment):
        # the command docs/deploy-elsewhere.md gives
        subprocess.run([str(ollama), "create", "ft", "-f", "Modelfile"], cwd=export, env=environment, check=True)
        answers = [ollama_chat(url, "ft", chat) for chat in chats]
        for chat in more:
            ollama_chat(url, "ft", chat, max_tokens=1)
    # the Modelfile's TEMPLATE, with its SYSTEM where the chat has none, writes what the model's template does
    assert rendered_prompts(log) == [render_chat(tokenizer, chat, generation_prompt=True) for chat in chats + more]
    expected = [tokenizer.decode(answer) for answer in hf_greedy]
    same = sum(a == b for a, b in zip(answers, expected))
    print(f"Ollama, f16 and the Modelfile: {same}/{len(HELD_OUT)} greedy answers identical")
    assert same >= 0.95 * len(HELD_OUT), answers
