"""A Hugging Face model folder written as one GGUF file, for llama.cpp and Ollama.

The file is written with the `gguf` package (llama.cpp's own writer and quantiser); names, metadata
and the vocabulary follow llama.cpp's `convert_hf_to_gguf.py` for the architectures the catalogue
uses (`ARCHITECTURES`): tensors are renamed by gguf's TensorNameMap, Llama's Q and K projections are
permuted into llama.cpp's rotary layout, Llama 3's rope scaling becomes a `rope_freqs` tensor,
the tokenizer is written as a GPT-2 BPE vocabulary with its merges, special tokens and chat template.

Tensors are read from the safetensors files and written one at a time (the header first, from
the shapes alone), so memory holds one tensor, not the model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer

from lmtune.token_count import CHATML_TEMPLATE
from workers.models.errors import ReportedError

QUANTIZATIONS = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
_TENSOR_TYPES = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0}


@dataclass(frozen=True)
class Architecture:
    gguf_arch: gguf.MODEL_ARCH
    permute_qk: bool  # llama.cpp's llama rotates pairs (i, i + d/2) as HF does only after this permutation


ARCHITECTURES = {
    "LlamaForCausalLM": Architecture(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "Qwen2ForCausalLM": Architecture(gguf.MODEL_ARCH.QWEN2, permute_qk=False),
}

# llama.cpp tells BPE pre-tokenizers apart by the tokens of this text (convert_hf_to_gguf.py's chktxt);
# the hashes of the pre-tokenizers of the catalogue's models, and of SmolLM2's
_CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
    "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
_PRE_TOKENIZERS = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen 1.5 to 2.5
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
}


class ExportError(ReportedError):
    """The model cannot be written as GGUF (an architecture or tokenizer this writer does not cover)."""

    code = "unsupported_model"


def write_gguf(
    model_dir: Path, out_file: Path, quantization: str, name: str, on_progress: Callable[[int, int], None] = None
) -> None:
    """`model_dir` (a whole model, LoRA already merged) as `out_file`; `name` goes in general.name."""
    config = AutoConfig.from_pretrained(model_dir)
    arch = _architecture(config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tensors = list(_tensor_plan(model_dir, config, arch, quantization))
    writer = _Writer(out_file, gguf.MODEL_ARCH_NAMES[arch.gguf_arch])
    writer.add_name(name)
    writer.add_file_type(QUANTIZATIONS[quantization])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_hyperparameters(writer, config)
    _add_vocabulary(writer, tokenizer, model_dir, config.vocab_size)
    for plan in tensors:
        writer.add_tensor_info(plan.name, plan.stored_shape, plan.stored_dtype, plan.nbytes, plan.raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for done, plan in enumerate(tensors, 1):
        writer.write_tensor_data(plan.load())
        if on_progress:
            on_progress(done, len(tensors))
    writer.close()


class _Writer(gguf.GGUFWriter):
    """gguf's writer, able to write an empty array: GGUF allows one, and llama.cpp needs the merges key
    of a BPE vocabulary that has nothing to merge (lmtune's tiny model's bytes), where gguf's own
    writer refuses an empty array or leaves the key out."""

    def _pack_val(self, val, vtype, add_vtype, sub_type=None) -> bytes:
        if vtype != gguf.GGUFValueType.ARRAY or len(val) or sub_type is None:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        return (self._pack("I", vtype) if add_vtype else b"") + self._pack("I", sub_type) + self._pack("Q", 0)


def _architecture(config) -> Architecture:
    names = getattr(config, "architectures", None) or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise ExportError(
        f"GGUF export covers the architectures {', '.join(sorted(ARCHITECTURES))}; this model is "
        f"{', '.join(names) or 'of an unnamed architecture'}. Download it in Hugging Face format instead",
        param="format",
    )


@dataclass
class _Tensor:
    name: str
    load_source: Callable[[], torch.Tensor]
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType

    @property
    def raw_dtype(self):
        return self.qtype if self.qtype == gguf.GGMLQuantizationType.Q8_0 else None

    @property
    def stored_dtype(self):
        return {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}.get(
            self.qtype, np.uint8
        )

    @property
    def stored_shape(self) -> tuple[int, ...]:
        if self.raw_dtype is None:
            return self.shape
        return gguf.quant_shape_to_byte_shape(self.shape, self.qtype)

    @property
    def nbytes(self) -> int:
        return math.prod(self.stored_shape) * np.dtype(self.stored_dtype).itemsize

    def load(self) -> np.ndarray:
        data = self.load_source().to(torch.float32).numpy()
        if self.qtype == gguf.GGMLQuantizationType.F32:
            return data
        return gguf.quants.quantize(data, self.qtype)


def _tensor_plan(model_dir: Path, config, arch: Architecture, quantization: str) -> Iterator[_Tensor]:
    blocks = config.num_hidden_layers
    names = gguf.get_tensor_name_map(arch.gguf_arch, blocks)
    heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", None)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError("the model folder holds no safetensors weights", param="format")
    for file in files:
        with safe_open(file, framework="pt") as handle:
            keys = list(handle.keys())
        for key in keys:
            if key.endswith("rotary_emb.inv_freq"):
                continue
            gguf_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ExportError(f"no GGUF name for tensor {key!r} of this model", param="format")
            shape = tuple(_shape(file, key))
            load = _loader(file, key)
            if arch.permute_qk and key.endswith(("q_proj.weight", "q_proj.bias")):
                load = _permuted(load, heads, heads)
            elif arch.permute_qk and key.endswith(("k_proj.weight", "k_proj.bias")):
                load = _permuted(load, heads, kv_heads)
            yield _Tensor(gguf_name, load, shape, _tensor_type(gguf_name, shape, quantization))
    factors = _llama3_rope_factors(config)
    if factors is not None:
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        yield _Tensor(name, lambda: factors, tuple(factors.shape), gguf.GGMLQuantizationType.F32)


def _shape(file: Path, key: str) -> list[int]:
    with safe_open(file, framework="pt") as handle:
        return handle.get_slice(key).get_shape()


def _loader(file: Path, key: str) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        with safe_open(file, framework="pt") as handle:
            return handle.get_tensor(key)

    return load


def _permuted(load, heads: int, kv_heads: int | None) -> Callable[[], torch.Tensor]:
    """convert_hf_to_gguf.py's LlamaModel.permute."""
    if kv_heads is not None and kv_heads != heads:
        heads = kv_heads

    def permuted() -> torch.Tensor:
        weights = load()
        return (
            weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape)
        )

    return permuted


def _tensor_type(name: str, shape: tuple[int, ...], quantization: str) -> gguf.GGMLQuantizationType:
    """As convert_hf_to_gguf.py: vectors and norms in f32; matrices in the asked type, f16 where a row
    does not split into Q8_0's blocks of 32."""
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return gguf.GGMLQuantizationType.F32
    qtype = _TENSOR_TYPES[quantization]
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    return qtype if shape[-1] % block == 0 else gguf.GGMLQuantizationType.F16


def _rope(config) -> dict:
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", None))
    return params


def _llama3_rope_factors(config) -> torch.Tensor | None:
    """Llama 3.1+'s frequency-dependent rope scaling, as llama.cpp reads it (convert_hf_to_gguf.py)."""
    rope = _rope(config)
    if str(rope.get("rope_type", "")).lower() != "llama3":
        return None
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    freqs = 1.0 / (rope.get("rope_theta") or 10000.0) ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    context = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in freqs.tolist():
        wavelength = 2 * math.pi / freq
        if wavelength < context / high:
            factors.append(1.0)
        elif wavelength > context / low:
            factors.append(factor)
        else:
            smooth = (context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)


def _add_hyperparameters(writer: gguf.GGUFWriter, config) -> None:
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_rope_dimension_count(head_dim)
    rope = _rope(config)
    if rope.get("rope_theta") is not None:
        writer.add_rope_freq_base(rope["rope_theta"])
    if rope.get("rope_type") == "linear" and rope.get("factor"):
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])


def _add_vocabulary(writer: gguf.GGUFWriter, tokenizer, model_dir: Path, vocab_size: int) -> None:
    """convert_hf_to_gguf.py's GPT-2 BPE vocabulary (get_vocab_base): every id up to the model's
    vocabulary size, added special tokens as CONTROL (so llama.cpp reads `<|im_start|>` in a prompt as
    one token), the merges, the special token ids and the chat template."""
    if not _is_byte_level_bpe(model_dir):
        raise ExportError(
            "GGUF export covers byte-level BPE tokenizers (Llama 3, Qwen 2, SmolLM); this model's is another kind",
            param="format",
        )
    vocab = tokenizer.get_vocab()
    by_id = {index: token for token, index in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if decoder[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    special.chat_template = tokenizer.chat_template or CHATML_TEMPLATE
    # llama.cpp adds BOS to a prompt as this says; HF's tokenizer decides by its post-processor
    special.add_special_token["bos"] = adds_bos(tokenizer)
    if not special.merges:  # llama.cpp refuses a BPE vocabulary without the key, even with nothing to merge
        special.load_merges = False  # else gguf warns of the missing merges that this writes
        writer.add_key_value(
            gguf.Keys.Tokenizer.MERGES, [], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.STRING
        )
    special.add_to_gguf(writer, quiet=True)


def adds_bos(tokenizer) -> bool:
    """Whether encoding text starts it with BOS (Llama 3's tokenizer does, SmolLM2's does not)."""
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def _is_byte_level_bpe(model_dir: Path) -> bool:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return False
    data = json.loads(path.read_text())
    return data["model"]["type"] == "BPE" and (data.get("decoder") or {}).get("type") == "ByteLevel"


def _pre_tokenizer(tokenizer) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer; "default" (GPT-2's) for one it lacks."""
    digest = sha256(str(tokenizer.encode(_CHECK_TEXT)).encode()).hexdigest()
    return _PRE_TOKENIZERS.get(digest, "default")
