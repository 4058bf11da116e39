"""`lmtune files|jobs|models ...`: the terminal client of a running server (over HTTP).

A table by default, the server's JSON with --json. Any error (from the server, or no server)
is one message and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.text import Text

from cli import terminal_views as views
from cli.client import DEFAULT_BASE_URL, ApiError, LmtuneClient
from cli.download import download_files, folder_path, list_folder
from cli.local_key import key_file, read_local_key, read_local_url
from lmtune.settings import SettingsError, load_settings

# `jobs follow` exit status by how the job ended
EXIT_FAILED, EXIT_CANCELLED = 1, 3
JOB_REFRESH_SECONDS = 2.0  # how often the live view asks for the job's ETA between events
STREAM_RETRIES = 5
EXPORT_POLL_SECONDS = 1.0


def console() -> Console:
    # piped output keeps whole table rows on one line
    probe = Console()
    return probe if probe.is_terminal else Console(width=240)


@dataclass
class Context:
    client: LmtuneClient
    as_json: bool
    console: Console

    def show(self, data, render) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            self.console.print(render(data))


def make_client(base_url: str, api_key: str | None) -> LmtuneClient:
    """The one place the commands get their client (tests swap in one bound to the app)."""
    return LmtuneClient(base_url, api_key)


def client_command(group: click.Group, name: str):
    """A command of `group` that talks to the server: adds --base-url, --api-key and --json, and
    turns every ApiError into one line on stderr and exit status 1."""

    def decorate(function):
        @click.option(
            "--base-url",
            envvar="LMTUNE_BASE_URL",
            help=f"The server's API root [env LMTUNE_BASE_URL] default: where `lmtune up` of this data folder "
            f"serves, else {DEFAULT_BASE_URL}.",
        )
        @click.option(
            "--api-key",
            envvar="LMTUNE_API_KEY",
            help="[env LMTUNE_API_KEY] default: the key `lmtune up` saved in the data folder.",
        )
        @click.option("--json", "as_json", is_flag=True, help="Print the server's JSON instead of a table.")
        @functools.wraps(function)
        def command(base_url: str | None, api_key: str | None, as_json: bool, **kwargs):
            key_source = "--api-key/LMTUNE_API_KEY"
            if not api_key or not base_url:
                try:
                    data_dir = load_settings().data_dir
                except SettingsError as error:
                    raise click.ClickException(f"bad settings in the environment:\n{error}") from None
                if not api_key:
                    api_key, key_source = read_local_key(data_dir), str(key_file(data_dir))
                base_url = base_url or read_local_url(data_dir) or DEFAULT_BASE_URL
            client = make_client(base_url, api_key)
            try:
                return function(Context(client, as_json, console()), **kwargs)
            except ApiError as error:
                raise click.ClickException(_explain(error, api_key, key_source)) from None
            finally:
                client.close()

        made = group.command(name, help=function.__doc__)(command)
        common = {"base_url", "api_key", "as_json"}  # the options above, shown after the command's own
        made.params = [p for p in made.params if p.name not in common] + [p for p in made.params if p.name in common]
        return made

    return decorate


def _explain(error: ApiError, api_key: str | None, key_source: str) -> str:
    if error.status != 401:
        return error.message
    if not api_key:
        return (
            f"{error.message}; no key given and none saved in {key_source}: pass --api-key or set "
            "LMTUNE_API_KEY (`lmtune up` saves one; `lmtune keys create NAME` makes one)"
        )
    return (
        f"{error.message} (the key from {key_source}); it may be revoked, or the server uses another "
        "data folder or database than this machine's LMTUNE_DATA_DIR / DATABASE_URL"
    )


@click.group()
def files() -> None:
    """Training files on the server."""


@client_command(files, "upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def files_upload(ctx: Context, path: Path) -> None:
    """Upload a JSONL training file (checked line by line by the server)."""
    uploaded = ctx.client.upload_file(path)
    ctx.show(uploaded, lambda f: views.table([f], views.FILE_COLUMNS))


@client_command(files, "list")
def files_list(ctx: Context) -> None:
    """Your uploaded files."""
    ctx.show(ctx.client.list_files(), lambda rows: views.table(rows, views.FILE_COLUMNS))


@click.group()
def jobs() -> None:
    """Fine-tuning jobs on the server."""


@client_command(jobs, "create")
@click.option("--model", required=True, help="A catalogue model (`lmtune models list`) or a fine-tuned one.")
@click.option("--training-file", required=True, help="A local JSONL file (uploaded first) or a file id.")
@click.option("--validation-file", help="A local JSONL file or a file id.")
@click.option(
    "--method",
    type=click.Choice(["supervised", "dpo"]),
    default="supervised",
    show_default=True,
    help="supervised: chat, prompt/completion or text rows; dpo: preference rows.",
)
@click.option("--beta", type=click.FloatRange(min=0, min_open=True, max=10), help="DPO's beta (default auto: 0.1).")
@click.option("--epochs", type=click.IntRange(1), help="n_epochs (default auto).")
@click.option("--batch-size", type=click.IntRange(1), help="batch_size: examples (DPO: pairs) per step (default auto).")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), help="training.learning_rate, absolute.")
@click.option("--lora-r", type=click.IntRange(1), help="Train a LoRA adapter of this rank instead of every weight.")
@click.option("--packing", is_flag=True, help="Pack several examples into each sequence.")
@click.option("--suffix", help="Goes into the fine-tuned model's name.")
@click.option("--gpus", type=click.IntRange(0), default=0, show_default=True, help="GPUs for the job (0: CPU).")
@click.option("--follow", is_flag=True, help="Then show the job live until it ends (exit status as `jobs follow`).")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Create nothing: show the steps, tokens, time and memory the job would take, and warnings (files are uploaded).",
)
def jobs_create(
    ctx: Context,
    model,
    training_file,
    validation_file,
    method,
    beta,
    epochs,
    batch_size,
    learning_rate,
    lora_r,
    packing,
    suffix,
    gpus,
    follow,
    dry_run,
) -> None:
    """Create a fine-tuning job; local files are uploaded first."""
    if beta is not None and method != "dpo":
        raise click.UsageError("--beta is DPO's: add --method dpo")
    given = (("n_epochs", epochs), ("batch_size", batch_size), ("beta", beta))
    hyperparameters = {key: value for key, value in given if value is not None}
    training = {
        key: value
        for key, value in (
            ("learning_rate", learning_rate),
            ("lora", lora_r and {"r": lora_r}),
            ("packing", packing or None),
        )
        if value
    }
    body = {
        "model": model,
        "training_file": _file_id(ctx, training_file),
        "method": {"type": method, method: {"hyperparameters": hyperparameters}},
        "training": training,
        "suffix": suffix,
        "gpus": gpus,
        "validation_file": _file_id(ctx, validation_file) if validation_file else None,
    }
    body = {key: value for key, value in body.items() if value is not None}
    if dry_run:
        ctx.show(ctx.client.json("POST", "/fine_tuning/jobs/estimate", json=body), views.estimate_details)
        return
    job = ctx.client.create_job(body)
    if follow:
        raise SystemExit(_follow(ctx, job))
    ctx.show(job, views.job_details)
    if not ctx.as_json:
        click.echo(f"follow it with: lmtune jobs follow {job['id']}", err=True)


def _file_id(ctx: Context, given: str) -> str:
    """A path is uploaded; anything else must be an uploaded file's id."""
    path = Path(given)
    if path.is_file():
        uploaded = ctx.client.upload_file(path)
        click.echo(f"uploaded {path} as {uploaded['id']} ({uploaded['examples']} examples)", err=True)
        return uploaded["id"]
    if not given.startswith("file-"):
        raise ApiError(f"{given}: no such local file, and not a file id (file-...)")
    return given


@client_command(jobs, "list")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
def jobs_list(ctx: Context, limit: int) -> None:
    """Your jobs, newest first."""
    ctx.show(ctx.client.list_jobs(limit), lambda rows: views.table(rows, views.JOB_COLUMNS))


@client_command(jobs, "get")
@click.argument("job_id")
def jobs_get(ctx: Context, job_id: str) -> None:
    """One job: status, progress, latest losses, error."""
    ctx.show(ctx.client.get_job(job_id), views.job_details)


# the statuses an action leads to: a queued job gets there at once, a running one once its trainer
# has stopped (cancel) or written its checkpoint (pause)
SETTLED = {"cancel": {"cancelled", "succeeded", "failed"}, "pause": {"paused", "succeeded", "failed", "cancelled"}}
STILL_GOING = {
    "cancel": "its trainer is being stopped",
    "pause": "it pauses once its trainer has written a checkpoint",
}
ACTION_POLL_SECONDS = 0.5


def _job_action(action: str, help: str) -> click.Command:
    def command(ctx: Context, job_id: str, wait: float = 0) -> None:
        job = ctx.client.job_action(job_id, action)
        settled = SETTLED.get(action, {job["status"]})
        deadline = time.monotonic() + wait
        while job["status"] not in settled and time.monotonic() < deadline:
            time.sleep(ACTION_POLL_SECONDS)
            job = ctx.client.get_job(job_id)
        ctx.show(job, views.job_details)  # the status after the action, not before it
        if job["status"] not in settled and not ctx.as_json:
            click.echo(f"{action} requested: {STILL_GOING[action]}; `lmtune jobs get {job_id}` shows when", err=True)

    command.__doc__ = help
    command = click.argument("job_id")(command)
    if action in SETTLED:
        command = click.option(
            "--wait",
            type=click.FloatRange(0, 3600),
            default=30,
            show_default=True,
            help=f"seconds to wait for the job to {action} before showing it",
        )(command)
    return client_command(jobs, action)(command)


jobs_cancel = _job_action("cancel", "Cancel a job (a running trainer is stopped within seconds).")
jobs_pause = _job_action("pause", "Pause a running job: it checkpoints and stops; `resume` continues it.")
jobs_resume = _job_action("resume", "Queue a paused job again; it continues from its pause checkpoint.")


@client_command(jobs, "follow")
@click.argument("job_id")
def jobs_follow(ctx: Context, job_id: str) -> None:
    """Show a job live (step, losses, ETA, events) until it ends. Exit status: 0 succeeded,
    1 failed, 3 cancelled."""
    raise SystemExit(_follow(ctx, ctx.client.get_job(job_id)))


def _follow(ctx: Context, job: dict) -> int:
    view = views.FollowView(job)
    live = ctx.console.is_terminal and not ctx.as_json
    seen: set[str] = set()
    if not live and not ctx.as_json:
        ctx.console.print(Text(f"{job['id']}  {job['model']}"))
    with Live(view, console=ctx.console, refresh_per_second=4) if live else nullcontext():
        retries, refreshed = 0, time.monotonic()
        while True:
            try:
                for event in ctx.client.stream_events(job["id"]):
                    retries = 0
                    if event["id"] in seen:  # replayed after a reconnection
                        continue
                    seen.add(event["id"])
                    view.add_event(event)
                    if ctx.as_json:
                        click.echo(json.dumps(event))
                    elif not live:
                        ctx.console.print(views.event_line(event))
                    # status changes come with message events; the ETA is refreshed now and then
                    if live and (event["type"] != "metrics" or time.monotonic() - refreshed > JOB_REFRESH_SECONDS):
                        view.update_job(ctx.client.get_job(job["id"]))
                        refreshed = time.monotonic()
                break
            except ApiError as error:
                retries += 1
                if error.status is not None or retries > STREAM_RETRIES:
                    raise
                time.sleep(retries)
        view.update_job(job := ctx.client.get_job(job["id"]))
    if not ctx.as_json:
        _summarise(ctx.console, job)
    return {"succeeded": 0, "cancelled": EXIT_CANCELLED}.get(job["status"], EXIT_FAILED)


def _summarise(console: Console, job: dict) -> None:
    # Text, not markup: messages may hold brackets
    if job["status"] == "succeeded":
        detail = (
            f": {job['trained_tokens']} tokens trained; model {job['fine_tuned_model']}; "
            f"download it with: lmtune jobs download {job['id']} --output DIR"
        )
    elif job["status"] == "failed":
        error = job.get("error") or {}
        detail = f": {error.get('code')}: {error.get('message')}"
    else:
        detail = f" at step {job['progress']['step']}"
    console.print(Text.assemble(views.status(job), detail))


@client_command(jobs, "checkpoints")
@click.argument("job_id")
def jobs_checkpoints(ctx: Context, job_id: str) -> None:
    """A job's checkpoints, newest first."""
    ctx.show(ctx.client.checkpoints(job_id), lambda rows: views.table(rows, views.CHECKPOINT_COLUMNS))


@client_command(jobs, "download")
@click.argument("job_id")
@click.option("--checkpoint", "checkpoint_id", help="A checkpoint id (`lmtune jobs checkpoints JOB_ID`).")
@click.option("--step", type=click.IntRange(1), help="The checkpoint written at this step.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["hf", "gguf"]),
    default="hf",
    show_default=True,
    help="hf: the model as trained (Hugging Face safetensors; for LoRA also adapter/); gguf: one GGUF file "
    "for llama.cpp and Ollama (LoRA merged) with an Ollama Modelfile, exported by a worker first.",
)
@click.option(
    "--quantization", type=click.Choice(["f16", "q8_0"]), help="For --format gguf: f16, or q8_0 (the server's default)."
)
@click.option("--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write into.")
def jobs_download(
    ctx: Context,
    job_id: str,
    checkpoint_id: str | None,
    step: int | None,
    fmt: str,
    quantization: str | None,
    output: Path,
) -> None:
    """Download the final model (or a checkpoint) file by file. Interrupted, the same command
    continues where it stopped; every file is checked against its sha256. With --format gguf the
    server exports it first (once: a later download reuses the export)."""
    if checkpoint_id and step:
        raise click.UsageError("give --checkpoint or --step, not both")
    if quantization and fmt != "gguf":
        raise click.UsageError("--quantization is for --format gguf; the hf download is the model as trained")
    _check_output(output)  # before any export is waited for
    if fmt == "gguf":
        if checkpoint_id:
            raise click.UsageError("--format gguf takes --step, not --checkpoint")
        body = {"format": fmt, "step": step} | ({"quantization": quantization} if quantization else {})
        folder = _finished_export(ctx, job_id, body)
    else:
        if step:
            checkpoint_id = _checkpoint_at(ctx, job_id, step)
        folder = folder_path(job_id, checkpoint_id)
    columns = (
        *Progress.get_default_columns()[:1],
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    entries = list_folder(ctx.client, folder)  # nothing to fetch: an error, no bar
    try:
        with Progress(*columns, console=Console(stderr=True), disable=ctx.as_json) as bar:
            task = bar.add_task(str(output), total=None)
            results = download_files(
                ctx.client,
                entries,
                output,
                on_start=lambda total, done: bar.update(task, total=total, completed=done),
                on_bytes=lambda n: bar.advance(task, n),
            )
    except OSError as error:  # the disk full, the folder unwritable after all: what is here resumes later
        raise click.ClickException(f"cannot write into {output}: {error.strerror}") from None
    summary = [
        {"path": r.path, "bytes": r.bytes, "resumed_from": r.resumed_from, "skipped": r.skipped} for r in results
    ]
    if ctx.as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    resumed = [r for r in results if r.resumed_from and not r.skipped]
    for r in resumed:
        click.echo(f"resumed {r.path} from byte {r.resumed_from:,}", err=True)
    click.echo(f"{len(results)} files ({sum(r.bytes for r in results):,} bytes) verified in {output}")


def _check_output(output: Path) -> None:
    """Refused at once, not after an export is waited for: an output folder that cannot be made
    (the download makes it, so that nothing is left behind when there is nothing to download)."""
    existing = next(folder for folder in (output, *output.parents) if folder.exists())
    if not existing.is_dir():
        raise click.ClickException(f"cannot make the output folder {output}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise click.ClickException(f"cannot make the output folder {output}: {existing} is not writable")


def _finished_export(ctx: Context, job_id: str, body: dict) -> str:
    """The files URL of the export `body` asks for, once a worker has written it (a bar meanwhile)."""
    export = ctx.client.export(job_id, body)
    with Progress(console=Console(stderr=True), disable=ctx.as_json) as bar:
        task = bar.add_task(f"exporting {export['format']} {export['quantization']}", total=1.0)
        while export["status"] in ("queued", "running"):
            bar.update(task, completed=export["progress"] or 0.0)
            time.sleep(EXPORT_POLL_SECONDS)
            export = ctx.client.get_export(job_id, export["id"])
        bar.update(task, completed=1.0)
    if export["status"] != "succeeded":
        error = export.get("error") or {}
        raise ApiError(f"export {export['id']} failed: {error.get('code')}: {error.get('message')}")
    return export["files_url"]


def _checkpoint_at(ctx: Context, job_id: str, step: int) -> str:
    checkpoints = ctx.client.checkpoints(job_id)
    for checkpoint in checkpoints:
        if checkpoint["step_number"] == step:
            return checkpoint["id"]
    steps = ", ".join(str(c["step_number"]) for c in sorted(checkpoints, key=lambda c: c["step_number"])) or "none"
    raise ApiError(f"job {job_id} has no checkpoint at step {step} (checkpoints kept: {steps})")


@click.group()
def models() -> None:
    """Models on the server."""


@client_command(models, "list")
def models_list(ctx: Context) -> None:
    """Catalogue models and your fine-tuned ones (any of them can be a job's --model)."""
    ctx.show(ctx.client.list_models(), lambda rows: views.table(rows, views.MODEL_COLUMNS))


def _delete_command(group: click.Group, collection: str, help: str) -> click.Command:
    def command(ctx: Context, object_id: str) -> None:
        ctx.show(
            ctx.client.delete(collection, object_id), lambda deleted: f"deleted {deleted['object']} {deleted['id']}"
        )

    command.__doc__ = help
    return client_command(group, "delete")(click.argument("object_id", metavar="ID")(command))


files_delete = _delete_command(files, "files", "Delete an uploaded file (jobs that used it keep what they trained).")
jobs_delete = _delete_command(
    jobs,
    "fine_tuning/jobs",
    "Delete an ended or paused job with its checkpoints, final model, "
    "metrics and events, freeing its disk; cancel a queued or running job first.",
)
models_delete = _delete_command(
    models, "models", "Delete a fine-tuned model from the list (its job's files stay until the job is deleted)."
)

GROUPS = (files, jobs, models)
