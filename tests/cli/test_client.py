"""The terminal client (`lmtune files|jobs|models`) against the real FastAPI app, in process.

Jobs are arranged through the store as a worker would write them (claim, progress, checkpoint,
events, finish), so no broker or trainer is needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from cli import client_commands as client_cli
from cli.client import LmtuneClient
from cli.download import ChecksumMismatch, download_folder, folder_path
from cli.local_key import save_local_url, url_file
from cli.main import main
from lmtune.layout import DataLayout
from lmtune.spec import parse_spec
from lmtune.store.database import Database
from lmtune.store.jobs import claim_job, create_job, finish_attempt
from lmtune.store.keys import authenticate
from tests.helpers import add_event, record_step
from tests.service.conftest import GOOD_FILE, api, make_api  # noqa: F401  (the app fixtures)

MODEL_BYTES = os.urandom(300_000)  # several 64 KiB chunks: an interruption lands mid-file
FILES = {"model.safetensors": MODEL_BYTES, "config.json": b'{"model_type": "llama"}', "tokenizer/vocab.json": b"{}"}


@dataclass
class Server:
    app: object
    db: Database
    data: DataLayout
    owner: str
    key: str
    requests: list[httpx.Request]

    def client(self, api_key: str | None = None) -> LmtuneClient:
        """Bound to the app in process; every request it sends is kept in `requests`."""
        http = TestClient(self.app)
        http.event_hooks = {"request": [self.requests.append]}
        return LmtuneClient("http://testserver/v1", api_key or self.key, http=http)

    def lmtune(self, *args: str, key: str | None = None):
        return CliRunner().invoke(main, list(args), env={"LMTUNE_API_KEY": key or self.key})

    def finished_job(self, status: str = "succeeded", **fields) -> str:
        """A job that ran 10 steps, kept a checkpoint at step 5 and wrote a final model."""
        spec = parse_spec(
            {"model": "lmtune-tiny", "training_file": "file-x", "hyperparameters": {"n_epochs": 2, "batch_size": 8}}
        )
        job_id = create_job(self.db, owner=self.owner, spec=spec.model_dump(mode="json"), queue="cpu").id
        attempt = claim_job(self.db, job_id, "test-worker", lease_seconds=60, max_attempts=3)
        run = self.data.job(job_id)
        write_folder(run.checkpoints / "step-000005", {**FILES, "model.safetensors": MODEL_BYTES[::-1]})
        for step in (5, 10):
            metrics = {
                "step": step,
                "total_steps": 10,
                "train_loss": 5.0 - step / 5,
                "valid_loss": 5.1 - step / 5,
                "tokens": 100 * step,
            }
            checkpoint = (
                (5, self.data.relative(run.checkpoints / "step-000005"), {"step": 5, "train_loss": 4.0})
                if step == 5
                else None
            )
            record_step(self.db, job_id, attempt, metrics, checkpoint)
        if status == "succeeded":
            write_folder(run.final, FILES)
        add_event(self.db, job_id, f"The job ended: {status}")
        finish_attempt(self.db, job_id, attempt, status, **fields)
        return job_id


def write_folder(folder: Path, files: dict[str, bytes]) -> None:
    """A folder as the trainer publishes it: the files and a manifest of their sizes and sha256."""
    for relative, content in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(content)
    entries = [{"path": p, "bytes": len(c), "sha256": hashlib.sha256(c).hexdigest()} for p, c in sorted(files.items())]
    (folder / "manifest.json").write_text(json.dumps({"files": entries}, indent=2))


@pytest.fixture
def server(api, monkeypatch):  # noqa: F811
    app = api.client.app
    key = api.alice["Authorization"].split()[1]
    running = Server(app, app.state.db, DataLayout(api.settings.data_dir), authenticate(app.state.db, key), key, [])
    monkeypatch.setattr(client_cli, "make_client", lambda base_url, api_key: running.client(api_key))
    return running


class Interrupted(Exception):
    """Stands for Ctrl-C or a dropped connection in the middle of a file."""


def interrupt_after(chunks: int):
    seen = []

    def on_bytes(n: int) -> None:
        seen.append(n)
        if len(seen) == chunks:
            raise Interrupted

    return on_bytes


def test_files_upload_and_list_print_a_table_or_the_servers_json(server, tmp_path):
    (tmp_path / "train.jsonl").write_bytes(GOOD_FILE)
    uploaded = server.lmtune("files", "upload", str(tmp_path / "train.jsonl"), "--json")
    assert uploaded.exit_code == 0, uploaded.output
    file = json.loads(uploaded.output)
    assert file["object"] == "file" and file["examples"] == 12

    listed = server.lmtune("files", "list")
    assert listed.exit_code == 0
    header, _, row = listed.output.splitlines()[:3]
    assert header.split() == ["ID", "FILENAME", "BYTES", "EXAMPLES", "CREATED"]
    assert row.split()[:4] == [file["id"], "train.jsonl", f"{len(GOOD_FILE):,}", "12"]
    assert [f["id"] for f in json.loads(server.lmtune("files", "list", "--json").output)] == [file["id"]]


def test_jobs_create_uploads_local_files_and_sends_every_setting(server, api, tmp_path):  # noqa: F811
    (tmp_path / "train.jsonl").write_bytes(GOOD_FILE)
    done = server.lmtune(
        "jobs",
        "create",
        "--model",
        "lmtune-tiny",
        "--training-file",
        str(tmp_path / "train.jsonl"),
        "--validation-file",
        str(tmp_path / "train.jsonl"),
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--learning-rate",
        "3e-3",
        "--lora-r",
        "4",
        "--packing",
        "--suffix",
        "demo",
        "--json",
    )
    assert done.exit_code == 0, done.output
    job = json.loads(done.output[done.output.index("{") :])
    assert api.queue.sent == [job["id"]]
    assert (job["hyperparameters"]["n_epochs"], job["hyperparameters"]["batch_size"]) == (3, 8)
    assert job["training"]["learning_rate"] == 3e-3 and job["training"]["lora"]["r"] == 4 and job["training"]["packing"]
    assert job["user_provided_suffix"] == "demo"
    assert job["training_file"] != job["validation_file"] and job["training_file"].startswith("file-")  # two uploads

    again = server.lmtune("jobs", "create", "--model", "lmtune-tiny", "--training-file", job["training_file"])
    assert again.exit_code == 0, again.output
    assert f"follow it with: lmtune jobs follow {api.queue.sent[-1]}" in again.output

    missing = server.lmtune("jobs", "create", "--model", "lmtune-tiny", "--training-file", "nope.jsonl")
    assert missing.exit_code == 1
    assert "nope.jsonl: no such local file, and not a file id" in missing.output


def test_jobs_create_with_method_dpo_sends_beta_and_writes_preference_samples(server, api, tmp_path):  # noqa: F811
    made = server.lmtune("make-sample-data", str(tmp_path / "pairs.jsonl"), "--kind", "preference", "--examples", "12")
    assert made.exit_code == 0 and "12 preference pairs written" in made.output
    pairs = str(tmp_path / "pairs.jsonl")
    done = server.lmtune(
        "jobs",
        "create",
        "--model",
        "lmtune-tiny",
        "--training-file",
        pairs,
        "--method",
        "dpo",
        "--beta",
        "0.3",
        "--json",
    )
    assert done.exit_code == 0, done.output
    job = json.loads(done.output[done.output.index("{") :])
    assert job["method"]["type"] == "dpo" and job["method"]["dpo"]["hyperparameters"]["beta"] == 0.3
    wrong = server.lmtune("jobs", "create", "--model", "lmtune-tiny", "--training-file", job["training_file"])
    assert wrong.exit_code == 1 and "is a preference row, which trains with method 'dpo'" in wrong.output
    assert server.lmtune("jobs", "create", "--model", "m", "--training-file", pairs, "--beta", "0.3").exit_code == 2


def test_cancel_acts_on_the_job_and_a_wrong_state_is_one_line(server, api, tmp_path):  # noqa: F811
    (tmp_path / "train.jsonl").write_bytes(GOOD_FILE)
    created = server.lmtune(
        "jobs", "create", "--model", "lmtune-tiny", "--training-file", str(tmp_path / "train.jsonl")
    )
    assert created.exit_code == 0, created.output
    job_id = api.queue.sent[-1]

    cancelled = server.lmtune("jobs", "cancel", job_id, "--json")
    assert cancelled.exit_code == 0 and json.loads(cancelled.output)["status"] == "cancelled"
    again = server.lmtune("jobs", "pause", job_id)
    assert again.exit_code == 1
    assert again.output == f"Error: cannot pause job {job_id}: it is cancelled\n"


def test_jobs_list_and_get_show_status_step_and_losses(server):
    job_id = server.finished_job()
    listed = server.lmtune("jobs", "list")
    assert listed.exit_code == 0
    row = next(line for line in listed.output.splitlines() if line.startswith(job_id))
    assert row.split()[1:5] == ["succeeded", "lmtune-tiny", "10/10", "3.0000"]

    details = dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1)
        for line in server.lmtune("jobs", "get", job_id).output.splitlines()
    )
    assert details["status"] == "succeeded" and details["step"] == "10/10"
    assert details["train loss"] == "3.0000" and details["valid loss"] == "3.1000"
    assert json.loads(server.lmtune("jobs", "get", job_id, "--json").output)["progress"] == {
        "step": 10,
        "total_steps": 10,
    }


def test_delete_frees_a_job_a_model_and_a_file_and_a_running_job_must_be_cancelled_first(server, api, tmp_path):  # noqa: F811
    job_id = server.finished_job(fine_tuned_model="ft:lmtune-tiny:demo")
    done = server.lmtune("jobs", "delete", job_id)
    assert done.exit_code == 0 and done.output == f"deleted fine_tuning.job {job_id}\n"
    assert not server.data.job(job_id).root.exists()
    assert server.lmtune("jobs", "get", job_id).exit_code == 1

    (tmp_path / "train.jsonl").write_bytes(GOOD_FILE)
    file_id = json.loads(server.lmtune("files", "upload", str(tmp_path / "train.jsonl"), "--json").output)["id"]
    server.lmtune("jobs", "create", "--model", "lmtune-tiny", "--training-file", file_id)
    queued = server.lmtune("jobs", "delete", api.queue.sent[-1])
    assert queued.exit_code == 1 and queued.output == f"Error: cannot delete job {api.queue.sent[-1]}: it is queued\n"
    assert json.loads(server.lmtune("files", "delete", file_id, "--json").output) == {
        "id": file_id,
        "object": "file",
        "deleted": True,
    }
    assert server.lmtune("files", "list", "--json").output.strip() == "[]"
    catalogue = server.lmtune("models", "delete", "lmtune-tiny")
    assert (
        catalogue.exit_code == 1
        and "'lmtune-tiny' is a catalogue model; only fine-tuned models can be deleted" in catalogue.output
    )


def test_a_server_error_is_one_line_and_a_non_zero_exit(server):
    done = server.lmtune("jobs", "get", "ftjob-missing")
    assert done.exit_code == 1
    assert done.output == "Error: no fine-tuning job with id 'ftjob-missing'\n"


def test_a_wrong_key_is_refused_with_where_the_key_came_from(server):
    done = server.lmtune("models", "list", key="lmt-not-a-key")
    assert done.exit_code == 1
    assert "invalid API key (the key from --api-key/LMTUNE_API_KEY)" in done.output
    assert "data folder" in done.output and "Traceback" not in done.output


def test_an_unreachable_server_is_one_line_naming_it():
    done = CliRunner().invoke(main, ["jobs", "list", "--base-url", "http://127.0.0.1:9/v1", "--api-key", "lmt-x"])
    assert done.exit_code == 1
    assert done.output.startswith("Error: cannot reach lmtune at http://127.0.0.1:9/v1")
    assert "--base-url or LMTUNE_BASE_URL" in done.output
    assert len(done.output.splitlines()) == 1


def test_without_base_url_the_client_goes_where_lmtune_up_of_its_data_folder_serves(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTUNE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LMTUNE_BASE_URL", raising=False)
    save_local_url(tmp_path, "http://127.0.0.1:9/v1")  # as `lmtune up --port 9` records it
    done = CliRunner().invoke(main, ["jobs", "list", "--api-key", "lmt-x"])
    assert done.exit_code == 1 and done.output.startswith("Error: cannot reach lmtune at http://127.0.0.1:9/v1")
    assert stat.S_IMODE(url_file(tmp_path).stat().st_mode) == 0o600


@pytest.mark.parametrize(("status", "exit_code"), [("succeeded", 0), ("failed", 1), ("cancelled", 3)])
def test_follow_replays_the_events_and_exits_by_how_the_job_ended(server, status, exit_code):
    extra = {"error_code": "training_diverged", "error_message": "loss is NaN at step 10"} if status == "failed" else {}
    job_id = server.finished_job(status, **extra)
    done = server.lmtune("jobs", "follow", job_id)
    assert done.exit_code == exit_code, done.output
    lines = done.output.splitlines()
    assert lines[0] == f"{job_id}  lmtune-tiny"
    assert lines[1].endswith("Fine-tuning job started (attempt 1)")
    assert lines[3].endswith("Checkpoint created at step 5") and lines[4].endswith("Step 10/10: training loss=3.0000")
    assert lines[-1].startswith(status)
    if status == "failed":
        assert lines[-1] == "failed: training_diverged: loss is NaN at step 10"


def test_download_fetches_every_file_verified_and_writes_the_manifest(server, tmp_path):
    job_id = server.finished_job()
    done = server.lmtune("jobs", "download", job_id, "--output", str(tmp_path / "model"))
    assert done.exit_code == 0, done.output
    for relative, content in FILES.items():
        assert (tmp_path / "model" / relative).read_bytes() == content
    assert not list((tmp_path / "model").rglob("*.part"))
    server_manifest = server.data.job(job_id).final / "manifest.json"
    assert json.loads((tmp_path / "model" / "manifest.json").read_text()) == json.loads(server_manifest.read_text())


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    job_id = server.finished_job()
    output = tmp_path / "model"
    with pytest.raises(Interrupted):
        download_folder(server.client(), folder_path(job_id, None), output, on_bytes=interrupt_after(2))
    partial = output / "model.safetensors.part"
    kept = partial.stat().st_size
    assert 0 < kept < len(MODEL_BYTES) and not (output / "model.safetensors").exists()

    server.requests.clear()
    done = server.lmtune("jobs", "download", job_id, "--output", str(output))
    assert done.exit_code == 0, done.output
    assert f"resumed model.safetensors from byte {kept:,}" in done.output
    ranges = [r.headers.get("range") for r in server.requests if r.url.path.endswith("/model.safetensors")]
    assert ranges == [f"bytes={kept}-"]
    assert (output / "model.safetensors").read_bytes() == MODEL_BYTES and not partial.exists()


def test_a_corrupt_partial_file_fails_the_hash_check_and_is_fetched_again(server, tmp_path):
    job_id = server.finished_job()
    output = tmp_path / "model"
    output.mkdir()
    (output / "model.safetensors.part").write_bytes(b"\0" * 70_000)  # not the server's first bytes

    done = server.lmtune("jobs", "download", job_id, "--output", str(output))
    assert done.exit_code == 1
    assert "model.safetensors: sha256" in done.output and "does not match" in done.output
    assert not (output / "model.safetensors").exists() and not (output / "model.safetensors.part").exists()
    assert not (output / "manifest.json").exists()  # the folder is not marked complete

    again = server.lmtune("jobs", "download", job_id, "--output", str(output))
    assert again.exit_code == 0, again.output
    assert (output / "model.safetensors").read_bytes() == MODEL_BYTES


def test_a_checkpoint_is_downloaded_by_step_and_a_missing_step_names_those_kept(server, tmp_path):
    job_id = server.finished_job()
    done = server.lmtune("jobs", "download", job_id, "--step", "5", "--output", str(tmp_path / "ckpt"))
    assert done.exit_code == 0, done.output
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == MODEL_BYTES[::-1]

    missing = server.lmtune("jobs", "download", job_id, "--step", "7", "--output", str(tmp_path / "other"))
    assert missing.exit_code == 1
    assert f"job {job_id} has no checkpoint at step 7 (checkpoints kept: 5)" in missing.output


def test_a_file_changed_on_the_server_is_refused(server, tmp_path):
    job_id = server.finished_job()
    (server.data.job(job_id).final / "config.json").write_bytes(b'{"model_type": "other"}')
    with pytest.raises(ChecksumMismatch, match="config.json: sha256"):
        download_folder(server.client(), folder_path(job_id, None), tmp_path / "model")


def test_a_download_refuses_a_quantization_without_gguf_and_an_output_it_cannot_make(server, tmp_path):
    # the hf download was made and the flag dropped before
    wrong = server.lmtune("jobs", "download", "ftjob-x", "--quantization", "f16", "--output", str(tmp_path / "a"))
    assert wrong.exit_code == 2 and "--quantization is for --format gguf" in wrong.output
    (tmp_path / "a-file").write_text("")
    output = tmp_path / "a-file" / "gguf"  # told before an export is waited for, in one line, not a traceback
    blocked = server.lmtune("jobs", "download", "ftjob-x", "--format", "gguf", "--output", str(output))
    assert blocked.exit_code == 1 and isinstance(blocked.exception, SystemExit), blocked.exception
    assert f"cannot make the output folder {output}: {tmp_path / 'a-file'} is not a folder" in blocked.output


def test_a_gguf_download_waits_for_one_export_and_a_second_reuses_it(server, api, tiny_model, tmp_path, monkeypatch):  # noqa: F811
    import gguf

    from lmtune.token_count import CHATML_TEMPLATE
    from tests.service.test_exports import trained_job, work

    job_id = trained_job(api, tiny_model)
    turns = []  # while the command waits, a worker takes the export
    monkeypatch.setattr(client_cli, "time", SimpleNamespace(sleep=lambda _: turns.append(work(api))))
    output = tmp_path / "gguf"
    done = server.lmtune("jobs", "download", job_id, "--format", "gguf", "--output", str(output))
    assert done.exit_code == 0, done.output
    name = f"{job_id}-final-q8_0.gguf"
    assert sorted(p.name for p in output.iterdir()) == sorted([name, "Modelfile", "manifest.json"])
    reader = gguf.GGUFReader(output / name)
    assert reader.get_field("general.name").contents() == f"ft:lmtune-tiny:{job_id}"
    assert reader.get_field("tokenizer.chat_template").contents() == CHATML_TEMPLATE  # the tiny model's
    assert len(turns) == 1

    again = server.lmtune("jobs", "download", job_id, "--format", "gguf", "--output", str(tmp_path / "again"))
    assert again.exit_code == 0 and (tmp_path / "again" / name).read_bytes() == (output / name).read_bytes()
    assert len(turns) == 1  # the export was kept: nothing to wait for

    refused = server.lmtune("jobs", "download", job_id, "--format", "gguf", "--step", "7", "--output", str(output))
    assert refused.exit_code == 1 and "no checkpoint at step 7 (checkpoints kept: 5)" in refused.output
