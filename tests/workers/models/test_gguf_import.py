"""The real model the slow tests use: a GGUF file de-quantised into a Hugging Face folder."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_converted_smollm2_answers_a_question(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2)
    assert "quantization_config" not in model.config.to_dict()
    assert len(tokenizer) == model.config.vocab_size == 49152
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_import_gguf_command_writes_a_loadable_folder(tmp_path):
    from click.testing import CliRunner
    from transformers import AutoConfig

    from cli.main import main
    from workers.models.gguf_import import smollm2_gguf

    result = CliRunner().invoke(main, ["import-gguf", str(smollm2_gguf()), "--output", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    config = AutoConfig.from_pretrained(tmp_path / "m")
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 30, 576)
    assert (tmp_path / "m" / "tokenizer.json").is_file()
