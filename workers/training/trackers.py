"""Experiment trackers (a job's `integrations`): W&B as OpenAI's integration does, TensorBoard and
MLflow. An Observer of the run, on the main process only: each step's metrics, the hyperparameters
at the start, each checkpoint's sample answers.

A tracker never fails the job: one whose library is missing, whose service does not answer or
whose options are refused writes a notice (the run folder's notices.jsonl, which the worker
records as a job event) and is left out for the rest of the run. Credentials come from the
worker's environment only (WANDB_API_KEY, MLFLOW_TRACKING_URI and its own variables).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from lmtune.layout import RunLayout
from lmtune.metrics_log import MetricsLog
from lmtune.spec import MAX_TAG_CHARS, Integration, JobSpec
from workers.training.errors import TrainingPaused
from workers.training.observer import Observer

log = logging.getLogger(__name__)
CLOSE_SECONDS = 60  # a tracker still sending after this long is left behind when the trainer exits
NAMES = {"wandb": "W&B", "tensorboard": "TensorBoard", "mlflow": "MLflow"}
INSTALL = {"wandb": "lmtune[wandb]", "tensorboard": "lmtune[tensorboard]", "mlflow": "lmtune[mlflow]"}


class TrackerFailed(Exception):
    """Why a tracker stops reporting; the message is the notice's."""


class Tracker:
    """One tracker of a run; its methods raise anything, Trackers turns that into a notice."""

    def start(self, config: dict, start_step: int) -> None: ...

    def log(self, step: int, metrics: dict) -> None: ...

    def samples(self, step: int, samples: list[dict]) -> None: ...

    def close(self, succeeded: bool) -> None: ...


class Trackers(Observer):
    """The job's trackers, opened at the run's start and closed when the trainer leaves."""

    def __init__(self, spec: JobSpec, output_dir: str | Path, model_name: str, main_process: bool = True):
        self.layout = RunLayout(Path(output_dir))
        self.run_id = self.layout.root.name  # the job's id under a worker (jobs/<job id>/)
        self.model_name = model_name
        self.integrations = list(spec.integrations) if main_process else []
        self.training = spec.training.model_dump(mode="json")
        self.active: dict[str, Tracker] = {}
        self.samples_seen = 0

    def on_start(self, total_steps: int, start_step: int) -> None:
        run = json.loads(self.layout.run.read_text()) if self.layout.run.exists() else {}
        config = {**run.get("hyperparameters", {}), **{f"training.{k}": v for k, v in self.training.items()}}
        config.update(model=self.model_name, train_examples=run.get("train_examples"), total_steps=total_steps)
        self.samples_seen = len(MetricsLog(self.layout.samples).read()) if self.layout.samples.exists() else 0
        for integration in self.integrations:
            try:
                tracker = _open(integration, self)
                tracker.start(config, start_step)
            except ImportError:
                self._notice(
                    integration.type,
                    f"its library is not installed on the worker (pip install '{INSTALL[integration.type]}'); "
                    "this job's metrics are not sent there",
                )
                continue
            except Exception as error:
                self._notice(
                    integration.type, f"could not start ({_reason(error)}); this job's metrics are not sent there"
                )
                continue
            self.active[integration.type] = tracker

    def on_step(self, metrics: dict) -> None:
        logged = {key: value for key, value in metrics.items() if isinstance(value, (int, float)) and key != "step"}
        self._each("log", metrics["step"], logged)

    def on_checkpoint(self, step: int, folder: Path) -> None:
        if not self.layout.samples.exists():
            return
        rows = MetricsLog(self.layout.samples).read()
        new, self.samples_seen = rows[self.samples_seen :], len(rows)
        for row in new:
            self._each("samples", row["step"], row["samples"])

    def close(self, succeeded: bool) -> None:
        """Each tracker's run ends (within CLOSE_SECONDS each: a slow service never holds the job)."""
        for kind, tracker in list(self.active.items()):
            closing = threading.Thread(target=tracker.close, args=(succeeded,), daemon=True)
            closing.start()
            closing.join(CLOSE_SECONDS)
            if closing.is_alive():
                self._notice(
                    kind, f"was still sending after {CLOSE_SECONDS} s when the run ended; the rest may be missing"
                )
        self.active.clear()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        # a paused run ends its tracker runs as finished: resuming continues them
        self.close(succeeded=error is None or isinstance(error, TrainingPaused))

    def _each(self, method: str, *args) -> None:
        for kind, tracker in list(self.active.items()):
            try:
                getattr(tracker, method)(*args)
            except Exception as error:
                self._notice(kind, f"stopped reporting ({_reason(error)}); the job goes on without it")
                del self.active[kind]

    def _notice(self, kind: str, message: str) -> None:
        text = f"{NAMES[kind]}: {message}"
        log.warning(text)
        MetricsLog(self.layout.notices).append({"message": text, "level": "warn", "data": {"tracker": kind}})

    def tags(self) -> list[str]:
        """lmtune's own tags, as OpenAI adds `openai/finetune`, `openai/<base model>`, `openai/<job id>`."""
        return [
            tag[:MAX_TAG_CHARS] for tag in ("lmtune/finetune", f"lmtune/{self.model_name}", f"lmtune/{self.run_id}")
        ]


def _open(integration: Integration, trackers: Trackers) -> Tracker:
    if integration.type == "wandb":
        return WandbTracker(integration.wandb, trackers)
    if integration.type == "tensorboard":
        return TensorboardTracker(trackers.layout.root / "tensorboard")
    return MlflowTracker(integration.mlflow, trackers)


class WandbTracker(Tracker):
    def __init__(self, options, trackers: Trackers):
        import wandb

        self.wandb, self.options, self.trackers = wandb, options, trackers
        self.run = None

    def start(self, config: dict, start_step: int) -> None:
        run_id = self.trackers.run_id
        self.run = self.wandb.init(
            project=self.options.project,
            entity=self.options.entity,
            name=self.options.name or run_id,
            id=run_id,  # a resumed job (a new attempt) continues the same run
            resume="allow",
            tags=[*self.options.tags, *self.trackers.tags()],
            config=config,
            dir=os.environ.get("WANDB_DIR") or str(self.trackers.layout.root),
            settings=self.wandb.Settings(init_timeout=60, silent=True),
            reinit="create_new",
        )

    def log(self, step: int, metrics: dict) -> None:
        self.run.log(metrics, step=step)

    def samples(self, step: int, samples: list[dict]) -> None:
        table = self.wandb.Table(columns=["step", "prompt", "completion"])
        for sample in samples:
            table.add_data(step, _prompt_text(sample["prompt"]), sample["completion"])
        self.run.log({"samples": table}, step=step)

    def close(self, succeeded: bool) -> None:
        self.run.finish(exit_code=0 if succeeded else 1)


class TensorboardTracker(Tracker):
    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.folder, self.writer_class, self.writer = folder, SummaryWriter, None

    def start(self, config: dict, start_step: int) -> None:
        # steps past the one a resumed run starts at are written again: purge the old ones
        self.writer = self.writer_class(log_dir=str(self.folder), purge_step=start_step + 1 if start_step else None)
        self.writer.add_text("hyperparameters", "\n".join(f"    {k}: {v}" for k, v in config.items()), start_step)

    def log(self, step: int, metrics: dict) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def samples(self, step: int, samples: list[dict]) -> None:
        text = "\n\n".join(f"**{_prompt_text(s['prompt'])}**\n\n{s['completion']}" for s in samples)
        self.writer.add_text("samples", text, step)

    def close(self, succeeded: bool) -> None:
        self.writer.close()


class MlflowTracker(Tracker):
    def __init__(self, options, trackers: Trackers):
        # a tracking server that does not answer costs seconds, not MLflow's default minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.tracking import MlflowClient

        self.options, self.trackers = options, trackers
        configured = os.environ.get("MLFLOW_TRACKING_URI")
        uri = configured or f"sqlite:///{trackers.layout.root / 'mlflow.db'}"
        # the run folder's store keeps its artifacts beside it (MLflow's default is the working folder)
        self.artifacts = None if configured else (trackers.layout.root / "mlartifacts").as_uri()
        self.client, self.run_id = MlflowClient(tracking_uri=uri), None
        self.id_file = trackers.layout.root / "mlflow-run-id"  # a resumed job continues its run

    def start(self, config: dict, start_step: int) -> None:
        from mlflow.entities import Param

        if self.id_file.exists():
            self.run_id = self.id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment = self.client.get_experiment_by_name(self.options.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else self.client.create_experiment(self.options.experiment, artifact_location=self.artifacts)
        )
        tags = {**self.options.tags, **{tag: "true" for tag in self.trackers.tags()}}
        run = self.client.create_run(experiment_id, run_name=self.options.run_name or self.trackers.run_id, tags=tags)
        self.run_id = run.info.run_id
        self.id_file.write_text(self.run_id)
        params = [Param(key, str(value)[:6000]) for key, value in config.items()]
        self.client.log_batch(self.run_id, params=params)

    def log(self, step: int, metrics: dict) -> None:
        from mlflow.entities import Metric

        moment = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), moment, step) for k, v in metrics.items()])

    def samples(self, step: int, samples: list[dict]) -> None:
        rows = [{"step": step, "prompt": _prompt_text(s["prompt"]), "completion": s["completion"]} for s in samples]
        self.client.log_dict(self.run_id, rows, f"samples/step-{step:06d}.json")

    def close(self, succeeded: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if succeeded else "FAILED")


def _prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{message['role']}: {message['content']}" for message in prompt)


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__
