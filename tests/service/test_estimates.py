"""POST /v1/fine_tuning/jobs/estimate: the steps and tokens the job would train on (counted as the
trainer counts them), its duration from earlier jobs, its memory against the workers, warnings."""

import time

import pytest

from lmtune.layout import DataLayout
from lmtune.spec import parse_spec, resolve_hyperparameters
from lmtune.store.jobs import create_job
from lmtune.store.models import Job, JobStatus
from lmtune.store.workers import WorkerResources, announce_worker
from lmtune.training_data import validate_jsonl_file
from tests.service.conftest import GOOD_FILE
from workers.model_sources import ensure_builtin_model
from workers.models.loading import load_tokenizer
from workers.training.data import tokenize_rows


def with_tiny_model(api):
    return ensure_builtin_model(DataLayout(api.settings.data_dir).builtin_model("lmtune-tiny"))


def estimate(api, file_id, headers=None, **body):
    return api.client.post(
        "/v1/fine_tuning/jobs/estimate",
        headers=headers or api.alice,
        json={"model": "lmtune-tiny", "training_file": file_id, **body},
    )


def trainer_tokens(model_folder, path, max_seq_length):
    data = tokenize_rows(validate_jsonl_file(path), load_tokenizer(str(model_folder)), max_seq_length)
    return sum(len(ids) for ids in data.examples["input_ids"]), data.truncated, len(data)


def test_steps_and_tokens_are_what_the_trainer_will_have(api):
    folder = with_tiny_model(api)
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    answer = estimate(api, file_id, hyperparameters={"n_epochs": 2, "batch_size": 4}, training={"max_seq_length": 128})
    assert answer.status_code == 200, answer.text
    found = answer.json()
    path = DataLayout(api.settings.data_dir).file(file_id)
    tokens, truncated, kept = trainer_tokens(folder, path, 128)
    assert found["tokens"] == {"per_epoch": tokens, "trained": 2 * tokens, "counted_with": "tokenizer"}
    assert (
        found["total_steps"]
        == 6
        == resolve_hyperparameters(
            parse_spec({"model": "m", "training_file": "f", "hyperparameters": {"n_epochs": 2, "batch_size": 4}}), kept
        ).total_steps
    )
    assert found["examples"]["truncated"] == truncated > 0  # the generated answers run past 128 bytes
    assert any("longer than training.max_seq_length=128" in warning for warning in found["warnings"])
    assert found["hyperparameters"]["n_epochs"] == 2 and found["queue"] == "api-test-cpu"
    assert api.queue.sent == []  # nothing was created


def test_without_the_model_files_the_tokens_are_a_guess_that_says_so(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    found = estimate(api, file_id).json()
    assert found["tokens"]["counted_with"] == "guess" and found["tokens"]["per_epoch"] > 0
    assert any("guessed" in warning for warning in found["warnings"])


def test_duration_comes_from_earlier_jobs_of_the_model_on_the_queue(api):
    with_tiny_model(api)
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    first = estimate(api, file_id).json()
    assert first["estimated_seconds_basis"].startswith("first guess") and first["estimated_seconds"] > 0
    db = api.client.app.state.db
    earlier = create_job(db, owner="key-other", spec={"model": "lmtune-tiny", "training": {}}, queue="api-test-cpu")
    with db.session() as session:
        row = session.get(Job, earlier.id)
        row.status, row.started_at, row.finished_at = JobStatus.SUCCEEDED, 1000, 1070
        row.latest_metrics = {"tokens_per_second": 500.0, "elapsed_seconds": 60.0}
    measured = estimate(api, file_id).json()
    assert measured["estimated_seconds"] == pytest.approx(10 + measured["tokens"]["trained"] / 500, abs=0.2)
    assert "1 earlier job of the same model and training options" in measured["estimated_seconds_basis"]


def test_memory_is_set_against_the_queue_s_live_workers(api):
    with_tiny_model(api)
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    nobody = estimate(api, file_id).json()
    assert nobody["memory"]["available_bytes"] is None
    assert any("no worker is taking jobs from queue api-test-cpu" in w for w in nobody["warnings"])
    db = api.client.app.state.db
    announce_worker(db, "small:1", ["api-test-cpu"], WorkerResources(0, [], 1024), time.time(), 60)
    small = estimate(api, file_id).json()
    assert small["memory"]["fits"] is False and small["memory"]["estimated_bytes"] > 1024
    assert any("GiB of CPU memory" in w for w in small["warnings"])
    announce_worker(db, "small:1", ["api-test-cpu"], WorkerResources(0, [], 64 * 2**30), time.time(), 60)
    assert estimate(api, file_id).json()["memory"]["fits"] is True


def test_a_batch_larger_than_the_data_is_warned_of(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    found = estimate(api, file_id, hyperparameters={"batch_size": 64}).json()
    assert found["total_steps"] == 9 and any("more than the 12 examples" in w for w in found["warnings"])


def test_another_keys_file_and_bad_settings_are_refused_as_a_create_would(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    assert estimate(api, file_id, headers=api.bob).status_code == 404
    refused = estimate(api, file_id, hyperparameters={"n_epochs": 0})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "hyperparameters.n_epochs"


@pytest.mark.slow
def test_tokens_of_a_real_tokenizer_and_chat_template_match_the_trainer(api, smollm2, tmp_path):
    """SmolLM2's BPE tokenizer and its chat template, rendered without transformers."""
    from cli.sample_data import chat_examples, write_jsonl
    from lmtune.token_count import TokenCounter

    path = write_jsonl(chat_examples(40, seed=5, spread=0.8), tmp_path / "train.jsonl")
    counted = TokenCounter(smollm2).count(validate_jsonl_file(path), 256)
    tokens, truncated, kept = trainer_tokens(smollm2, path, 256)
    assert abs(sum(counted.lengths) - tokens) <= 0.01 * tokens
    assert (counted.truncated, len(counted.lengths)) == (truncated, kept)


def test_tool_calling_rows_are_counted_as_the_trainer_renders_them(api, tmp_path):
    from cli.sample_data import tool_examples, write_jsonl

    folder = with_tiny_model(api)
    path = write_jsonl(tool_examples(12, seed=4), tmp_path / "tools.jsonl")
    file_id = api.upload(api.alice, path.read_bytes()).json()["id"]
    answer = estimate(api, file_id, training={"max_seq_length": 2048})
    assert answer.status_code == 200, answer.text
    tokens, _, _ = trainer_tokens(folder, path, 2048)
    # the tiny model's template renders no tools: the fallback format, counted whole (a token or two apart)
    assert abs(answer.json()["tokens"]["per_epoch"] - tokens) <= 2 * 12


def test_preference_pairs_are_counted_as_both_conversations_the_trainer_runs(api, tmp_path):
    from cli.sample_data import preference_examples, write_jsonl
    from workers.training.preference_data import tokenize_pairs

    folder = with_tiny_model(api)
    path = write_jsonl(preference_examples(12, seed=4, spread=0.5), tmp_path / "pairs.jsonl")
    file_id = api.upload(api.alice, path.read_bytes()).json()["id"]
    dpo = {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}}
    answer = estimate(api, file_id, method=dpo)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    pairs = tokenize_pairs(validate_jsonl_file(path), load_tokenizer(str(folder)), 512).examples
    tokens = sum(2 * len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)
    assert abs(found["tokens"]["per_epoch"] - tokens) <= 2 * 2 * 12
    assert found["total_steps"] == 3 and found["hyperparameters"]["beta"] == 0.1
    assert found["examples"]["training"] == 12
