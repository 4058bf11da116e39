"""Experiment trackers read back from what they wrote: W&B's offline run file, TensorBoard's event
files, MLflow's store; and a tracker that fails writes a notice and never fails the run."""

import json
import struct
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lmtune.layout import RunLayout
from lmtune.metrics_log import MetricsLog
from lmtune.spec import parse_spec
from tests.helpers import metric_rows
from workers.training.entry import run_trainer
from workers.training.trackers import Trackers


def wandb_records(run_file: Path) -> list:
    """The records of a W&B offline run file (LevelDB's log format: 32 KiB blocks of chunks, each
    with a 7-byte header; a record is one FULL chunk or FIRST, MIDDLE..., LAST), as protobufs."""
    from wandb.proto import wandb_internal_pb2

    raw, block = run_file.read_bytes(), 32 * 1024
    position, chunks, records = 7, b"", []  # past the file's own header
    while position + 7 <= len(raw):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", raw[position : position + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):  # the block's padding
            position += left
            continue
        chunks += raw[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def spec_with(tiny_model, chat_file, integrations):
    return {
        "model": str(tiny_model),
        "training_file": str(chat_file),
        "hyperparameters": {"n_epochs": 1, "batch_size": 8},
        "training": {"learning_rate": 3e-3, "checkpoint_every_steps": 2, "sample_max_tokens": 8},
        "integrations": integrations,
    }


@pytest.mark.slow
def test_each_step_the_hyperparameters_and_the_samples_reach_all_three_trackers(
    tiny_model, chat_file, tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    integrations = [
        {"type": "wandb", "wandb": {"project": "demo", "tags": ["mine"]}},
        {"type": "tensorboard"},
        {"type": "mlflow", "mlflow": {"experiment": "demo", "tags": {"team": "a"}}},
    ]
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec_with(tiny_model, chat_file, integrations)))
    output = tmp_path / "ftjob-abc"
    assert run_trainer(str(spec_path), str(output), 1, "lmtune-tiny") == 0
    rows = metric_rows(output)
    losses = {row["step"]: row["train_loss"] for row in rows}
    assert len(losses) == 4 and not RunLayout(output).notices.exists()  # no tracker complained
    sample_steps = [row["step"] for row in MetricsLog(RunLayout(output).samples).read()]

    # W&B: the run named and tagged as OpenAI's integration does, with lmtune's tags
    [run_file] = (tmp_path / "wandb").glob("wandb/offline-run-*/run-ftjob-abc.wandb")
    records = wandb_records(run_file)
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.run_id, run.display_name, run.project) == ("ftjob-abc", "ftjob-abc", "demo")
    assert list(run.tags) == ["mine", "lmtune/finetune", "lmtune/lmtune-tiny", "lmtune/ftjob-abc"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["batch_size"] == 8 and config["training.learning_rate"] == 3e-3
    history = [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    logged = {row["_step"]: row["train_loss"] for row in history if "train_loss" in row}
    assert logged == pytest.approx(losses)
    tables = {row["_step"]: row["samples/path"] for row in history if "samples/path" in row}
    assert sorted(tables) == sample_steps
    table = json.loads((run_file.parent / "files" / tables[sample_steps[-1]]).read_text())
    answers = MetricsLog(RunLayout(output).samples).read()[-1]["samples"]
    assert [row[2] for row in table["data"]] == [answer["completion"] for answer in answers]

    # TensorBoard: the event files read back
    events = EventAccumulator(str(output / "tensorboard"))
    events.Reload()
    assert {e.step: e.value for e in events.Scalars("train_loss")} == pytest.approx(losses, rel=1e-6)
    texts = {tag: events.Tensors(f"{tag}/text_summary") for tag in ("samples", "hyperparameters")}
    assert [e.step for e in texts["samples"]] == sample_steps
    assert answers[0]["completion"] in texts["samples"][-1].tensor_proto.string_val[0].decode()
    assert "batch_size: 8" in texts["hyperparameters"][0].tensor_proto.string_val[0].decode()

    # MLflow: the run in its store, read with MlflowClient
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{output / 'mlflow.db'}")
    mlrun = client.get_run((output / "mlflow-run-id").read_text())
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "ftjob-abc"
    assert mlrun.data.tags["team"] == "a" and mlrun.data.tags["lmtune/finetune"] == "true"
    assert mlrun.data.params["batch_size"] == "8"
    assert {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, "train_loss")} == pytest.approx(
        losses
    )
    artifacts = [a.path for a in client.list_artifacts(mlrun.info.run_id, "samples")]
    assert artifacts == [f"samples/step-{step:06d}.json" for step in sample_steps]
    assert mlrun.info.artifact_uri.startswith((output / "mlartifacts").as_uri())  # in the run folder, not the cwd


def test_a_tracker_that_fails_writes_a_notice_and_the_others_go_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # the library is not installed on this worker
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # a tracking server that does not answer
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    spec = parse_spec(
        spec_with(
            "m",
            "f",
            [
                {"type": "wandb", "wandb": {"project": "p"}},
                {"type": "tensorboard"},
                {"type": "mlflow", "mlflow": {"experiment": "e"}},
            ],
        )
    )
    output = tmp_path / "ftjob-x"
    output.mkdir()
    with Trackers(spec, output, "lmtune-tiny") as trackers:
        trackers.on_start(total_steps=2, start_step=0)
        for step in (1, 2):
            trackers.on_step({"step": step, "train_loss": 1.0 / step})
        assert list(trackers.active) == ["tensorboard"]
    notices = MetricsLog(RunLayout(output).notices).read()
    assert [(n["data"]["tracker"], n["level"]) for n in notices] == [("wandb", "warn"), ("mlflow", "warn")]
    assert "pip install 'lmtune[wandb]'" in notices[0]["message"]
    assert notices[1]["message"].startswith("MLflow: could not start (")
    events = EventAccumulator(str(output / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2]


def test_trackers_report_from_the_main_process_only(tmp_path):
    spec = parse_spec(spec_with("m", "f", [{"type": "tensorboard"}]))
    with Trackers(spec, tmp_path, "m", main_process=False) as trackers:
        trackers.on_start(total_steps=1, start_step=0)
        trackers.on_step({"step": 1, "train_loss": 1.0})
    assert not (tmp_path / "tensorboard").exists()
