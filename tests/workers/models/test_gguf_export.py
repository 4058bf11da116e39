"""The GGUF writer on every architecture the catalogue uses (Llama, Qwen2; Llama 3's rope scaling),
read back by transformers' GGUF loader and by gguf's reader, and (slow) run in llama.cpp; the Ollama
Modelfile's template read off ChatML and Llama 3 style chat templates."""

import json

import gguf
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from workers.models.generation import render_chat
from workers.models.gguf_export import ExportError, write_gguf
from workers.models.ollama_modelfile import modelfile
from workers.models.tiny_model import build_byte_tokenizer

SMALL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}


def small_model(folder, model_class, config_class, **extra):
    tokenizer = build_byte_tokenizer()
    config = config_class(vocab_size=len(tokenizer) + 11, **SMALL, **extra)  # unused rows past the tokenizer's
    torch.manual_seed(0)
    model = model_class(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model.state_dict()


def read_back(path):
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).state_dict()


def close(expected: dict, got: dict, tolerance: float) -> None:
    assert set(got) == set(expected) - {"lm_head.weight"} | ({"lm_head.weight"} & set(got))
    for name in got:
        torch.testing.assert_close(got[name], expected[name], atol=tolerance, rtol=0, msg=name)


@pytest.mark.parametrize(
    "model_class, config_class, extra",
    [
        (LlamaForCausalLM, LlamaConfig, {}),
        (Qwen2ForCausalLM, Qwen2Config, {}),
    ],
)
def test_each_architecture_reads_back_with_its_weights(tmp_path, model_class, config_class, extra):
    expected = small_model(tmp_path / "model", model_class, config_class, **extra)
    for quantization, tolerance in (("f16", 1e-3), ("q8_0", 2e-2)):
        path = tmp_path / f"model-{quantization}.gguf"
        write_gguf(tmp_path / "model", path, quantization, "a model")
        close(expected, read_back(path), tolerance)


def test_the_file_carries_the_vocabulary_the_template_and_llama_cpp_s_layout(tmp_path):
    small_model(tmp_path / "model", LlamaForCausalLM, LlamaConfig)
    write_gguf(tmp_path / "model", tmp_path / "model.gguf", "q8_0", "ft:lmtune-tiny:demo:ftjob-1")
    reader = gguf.GGUFReader(tmp_path / "model.gguf")
    field = lambda name: reader.get_field(name).contents()  # noqa: E731
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert field("general.name") == "ft:lmtune-tiny:demo:ftjob-1"
    assert field("general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0
    assert field("tokenizer.chat_template") == tokenizer.chat_template
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == len(tokenizer) + 11 and tokens[-1] == f"[PAD{len(tokens) - 1}]"
    types = field("tokenizer.ggml.token_type")
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert types[im_start] == gguf.TokenType.CONTROL and types[ord("a") - 33] == gguf.TokenType.NORMAL
    assert field("tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    assert field("tokenizer.ggml.add_bos_token") is False  # as the byte tokenizer encodes text
    kinds = {t.name: t.tensor_type for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32  # norms stay f32, as llama.cpp's
    assert kinds["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.Q8_0


LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "rope_theta": 500000.0,
    "original_max_position_embeddings": 64,
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "model_class, config_class, extra",
    [
        (LlamaForCausalLM, LlamaConfig, {}),
        (Qwen2ForCausalLM, Qwen2Config, {}),
        (LlamaForCausalLM, LlamaConfig, {"rope_parameters": LLAMA3_ROPE}),
    ],
    ids=["llama", "qwen2", "llama3-rope"],
)
def test_llama_cpp_computes_what_transformers_does_on_each_architecture(
    llama_cpp, tmp_path, model_class, config_class, extra
):
    """The f16 file in llama.cpp itself, not only read back: the byte vocabulary loads and tokenises
    a chat as transformers does, and the logits over 120 positions (past Llama 3's original context
    of 64) are the model's, so the layout (Q/K permutation, biases, rope factors) is llama.cpp's."""
    small_model(tmp_path, model_class, config_class, **extra)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    if model_class is Qwen2ForCausalLM:  # Qwen 2's Q, K and V biases, which start at zero
        with torch.no_grad():
            for name, weights in model.named_parameters():
                if name.endswith(".bias"):
                    weights.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
        model.save_pretrained(tmp_path)
    write_gguf(tmp_path, tmp_path / "model.gguf", "f16", "a model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    text = render_chat(tokenizer, [{"role": "user", "content": "Héllo, wörld! 12 345\n\n\tà 🚀"}], True)
    ids = torch.randint(3, len(tokenizer), (120,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids[None]).logits[0].numpy()
    runtime = llama_cpp.Llama(str(tmp_path / "model.gguf"), n_ctx=256, logits_all=True, n_threads=2, verbose=False)
    try:
        assert (
            runtime.tokenize(text.encode(), add_bos=False, special=True)
            == tokenizer(text, add_special_tokens=False)["input_ids"]
        )
        runtime.eval(ids.tolist())
        got = runtime.scores[: len(ids)]
    finally:
        runtime.close()
    # f16 weights: 3e-4 measured, against logits spread over 0.15 (their standard deviation)
    assert abs(got - expected).max() < 0.02 * expected.std(), abs(got - expected).max()


def test_llama_3_rope_scaling_becomes_llama_cpp_s_rope_factors(tmp_path):
    small_model(tmp_path / "model", LlamaForCausalLM, LlamaConfig, rope_parameters=LLAMA3_ROPE)
    write_gguf(tmp_path / "model", tmp_path / "model.gguf", "f16", "llama 3 style")
    reader = gguf.GGUFReader(tmp_path / "model.gguf")
    (factors,) = [t for t in reader.tensors if t.name == "rope_freqs.weight"]
    assert len(factors.data) == 16 // 2 and factors.data[0] == 1.0 and factors.data[-1] == 8.0
    assert reader.get_field("llama.rope.freq_base").contents() == 500000.0


def test_an_architecture_it_does_not_cover_is_named(tmp_path):
    small_model(tmp_path / "model", LlamaForCausalLM, LlamaConfig)
    config = tmp_path / "model" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "architectures": ["MambaForCausalLM"]}))
    with pytest.raises(ExportError, match="MambaForCausalLM") as refused:
        write_gguf(tmp_path / "model", tmp_path / "model.gguf", "f16", "x")
    assert refused.value.code == "unsupported_model" and str(tmp_path) not in str(refused.value)


LLAMA3_STYLE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = 'You are terse.' %}{% endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\n{{ system }}<|eot_id|>"
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def test_the_modelfile_repeats_the_template_s_turns_its_stops_and_default_system(tmp_path, tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}
    )
    tokenizer.chat_template = LLAMA3_STYLE
    tokenizer.eos_token = "<|eot_id|>"
    (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": 0.6, "top_p": 0.9}))
    text = modelfile(tokenizer, "model.gguf", tmp_path)
    assert text.startswith("FROM ./model.gguf\n")
    header = "<|start_header_id|>{}<|end_header_id|>\n\n"
    assert (
        '{{ if eq .Role "user" }}' in text.replace("{{ else if", "{{ if")
        and header.format("user") + "{{ .Content }}<|eot_id|>" in text
        and text.count("<|begin_of_text|>") == 0
    )
    assert f'{{{{ end }}}}{{{{ end }}}}{header.format("assistant")}"""' in text  # the generation prompt
    assert 'SYSTEM """You are terse."""' in text
    assert 'PARAMETER stop "<|eot_id|>"' in text
    assert "PARAMETER temperature 0.6" in text and "PARAMETER top_p 0.9" in text and "PARAMETER top_k 0" in text


def test_chatml_s_modelfile_keeps_a_bos_the_tokenizer_does_not_add(tmp_path, tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)  # ChatML; its template starts with <s>, encoding does not
    text = modelfile(tokenizer, "model.gguf", tmp_path)
    assert 'TEMPLATE """<s>{{ range .Messages }}{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}' in text
    assert text.count("<s>") == 1 and "SYSTEM" not in text and "PARAMETER temperature 1.0" in text


def test_a_bos_that_opens_every_turn_stays_in_each_turn(tmp_path, tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.bos_token = "<|im_start|>"  # as SmolLM2's: ChatML's turn opener is its BOS token,
    tokenizer.chat_template = tokenizer.chat_template.replace("{{ bos_token }}", "")  # not written apart
    text = modelfile(tokenizer, "model.gguf", tmp_path)
    # lifted out as a BOS, it would open a chat without a system message twice and a later system turn not at all
    assert 'TEMPLATE """{{ range .Messages }}{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}' in text
