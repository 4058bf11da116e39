"""A small randomly initialised Llama-style model with a byte-level tokenizer, built with no network.

It exists for tests and offline demos: it has the same files and loading path as a hub model
(`AutoModelForCausalLM.from_pretrained(folder)`), but its weights are random.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from workers.models.chat_format import CHATML_TEMPLATE

SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]

README = """# lmtune tiny model

A {parameters:,}-parameter Llama-style causal language model made by `lmtune make-tiny-model`.
**Its weights are random** (seed {seed}): it knows nothing and exists for tests and offline demos
of the fine-tuning pipeline. The tokenizer is byte-level (every UTF-8 byte is one token) with a
ChatML chat template.
"""


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={symbol: i for i, symbol in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    # like Llama's tokenizer: plain encoding starts with BOS
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.bos_token_id)]
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def make_tiny_model(
    folder: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 176,
    max_positions: int = 2048,
    vocab_size: int | None = None,
    seed: int = 0,
) -> Path:
    """`vocab_size` above the tokenizer's (261) adds unused rows, for a realistic embedding cost."""
    folder = Path(folder)
    tokenizer = build_byte_tokenizer()
    config = LlamaConfig(
        vocab_size=max(vocab_size or 0, len(tokenizer)),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    parameters = sum(p.numel() for p in model.parameters())
    (folder / "README.md").write_text(README.format(parameters=parameters, seed=seed))
    return folder
