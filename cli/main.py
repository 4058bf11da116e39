"""The `lmtune` command. Heavy imports (torch, transformers) happen inside the commands that need them."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import click

from cli.client_commands import GROUPS as CLIENT_GROUPS
from cli.eval_commands import GROUPS as EVAL_GROUPS
from cli.restarting_child import WORKER_NICENESS, RestartingChild
from cli.webhook_commands import webhooks
from lmtune.settings import Settings, SettingsError, load_settings

# what the service writes (uploads, the SQLite store, run folders, checkpoints) is its user's alone:
# files 0600, folders 0700; set at the start of every command that writes to the data folder
PRIVATE_UMASK = 0o077


@click.group()
def main() -> None:
    """lmtune: fine-tune language models on your own hardware."""


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--output",
    "output_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Run folder; an existing one is resumed.",
)
@click.option(
    "--num-processes",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Data-parallel processes (one per GPU).",
)
@click.option(
    "--model-name", default=None, help="What to call the model in messages and saved files (default: the spec's model)."
)
def train(spec_path: str, output_dir: str, num_processes: int, model_name: str | None) -> None:
    """Train the job in SPEC (YAML or JSON) and write the run to --output."""
    from workers.training.entry import run_trainer

    sys.exit(run_trainer(spec_path, output_dir, num_processes, model_name))


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        raise click.ClickException(f"bad settings in the environment:\n{error}") from None


@main.command("make-tiny-model")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True)
def make_tiny_model_command(folder: str, seed: int) -> None:
    """Write a small randomly initialised Llama-style model with a byte-level tokenizer to FOLDER."""
    from workers.models.tiny_model import make_tiny_model

    path = make_tiny_model(Path(folder), seed=seed)
    click.echo(f"tiny model (random weights) written to {path}")


@main.command("import-gguf")
@click.argument("gguf_path", metavar="GGUF", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--output", "output_dir", required=True, type=click.Path(file_okay=False), help="Folder for the Hugging Face model."
)
def import_gguf_command(gguf_path: str, output_dir: str) -> None:
    """De-quantise a GGUF model file into a Hugging Face folder (fp32 safetensors and tokenizer)."""
    from workers.models.gguf_import import convert_gguf

    click.echo(f"model written to {convert_gguf(gguf_path, output_dir)}")


@main.command("make-sample-data")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option(
    "--kind",
    type=click.Choice(["chat", "tools", "preference"]),
    default="chat",
    show_default=True,
    help="chat: answer in capitals; tools: OpenAI tool-calling rows (get_weather, get_local_time); "
    "preference: pairs for DPO (method dpo), the answer in capitals preferred.",
)
@click.option("--examples", default=100, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--spread", default=0.6, show_default=True, help="Sigma of the log-normal length spread (chat, preference)."
)
def make_sample_data_command(path: str, kind: str, examples: int, seed: int, spread: float) -> None:
    """Write a generated dataset to PATH as JSONL."""
    from cli.sample_data import chat_examples, preference_examples, tool_examples, write_jsonl

    if kind == "tools":
        rows = tool_examples(examples, seed=seed)
    else:
        rows = (preference_examples if kind == "preference" else chat_examples)(examples, seed=seed, spread=spread)
    write_jsonl(rows, path)
    what = {"tools": "tool-calling examples", "preference": "preference pairs"}.get(kind, "chat examples")
    click.echo(f"{examples} {what} written to {path}")


@main.command()
@click.option("--gpus", type=click.IntRange(0), default=None, help="GPUs this worker has; default: all it sees.")
@click.option(
    "--queue",
    "queues",
    multiple=True,
    help="Queue to take work from; default: the one for its GPU count, evals and exports.",
)
def worker(gpus: int | None, queues: tuple[str, ...]) -> None:
    """Run a worker that takes jobs from the broker and trains them, one at a time."""
    from workers.celery_worker import run_worker

    os.umask(PRIVATE_UMASK)

    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    run_worker(_settings(), gpus, list(queues) or None)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def serve(host: str, port: int) -> None:
    """Run the HTTP API alone (workers run elsewhere, sharing the database, broker and data folder)."""
    import uvicorn

    from service.app import create_app

    os.umask(PRIVATE_UMASK)
    settings = _settings()
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        timeout_keep_alive=5,  # an idle keep-alive connection is closed after 5 s
        h11_max_incomplete_event_size=16 * 1024,  # a request line and headers larger than 16 KiB are refused
        limit_concurrency=settings.max_connections,  # past this many connections, 503 at once
        timeout_graceful_shutdown=10,  # open event streams do not hold a stop for long
    )


@main.command("serve-models")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="Default: the port of LMTUNE_INFERENCE_URL.")
@click.option("--fd", type=int, default=None, hidden=True, help="Serve on this inherited listening socket.")
def serve_models(host: str, port: int | None, fd: int | None) -> None:
    """Run the model server: it keeps recently used models loaded and answers the API's completions
    (only requests that show LMTUNE_INFERENCE_SECRET, which the API sends)."""
    import socket

    import uvicorn

    from workers.serving.engine import ModelCache
    from workers.serving.server import create_serving_app

    settings = _settings()
    if not settings.inference_secret:
        raise click.ClickException(
            "LMTUNE_INFERENCE_SECRET is not set: the model server answers only requests showing it. Set the same "
            "value (16 to 512 characters, e.g. from `openssl rand -hex 32`) for the API and the model server "
            "(`lmtune up` makes one itself)"
        )
    cache = ModelCache(settings.serve_max_models, settings.serve_max_memory_mb * 2**20)
    app = create_serving_app(cache, settings.serve_concurrency, settings.serve_queue, settings.inference_secret)
    if fd is not None:  # `lmtune up` holds the socket, so its port stays this instance's across restarts
        server = uvicorn.Server(uvicorn.Config(app, log_level="info"))
        server.run(sockets=[socket.socket(fileno=fd)])
        return
    uvicorn.run(app, host=host, port=port or _inference_port(settings.inference_url), log_level="info")


def _inference_port(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port or 80


@main.command("deliver-webhooks")
def deliver_webhooks() -> None:
    """Send the webhook deliveries of every key as their events happen, retrying until answered
    (run one or more per deployment, anywhere that reaches the database; `lmtune up` runs one)."""
    from lmtune.store.database import open_database
    from service.webhook_delivery import run_deliverer

    settings = _settings()
    run_deliverer(settings, open_database(settings.database_url))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--gpus", type=click.IntRange(0), default=None, help="GPUs for the worker; default: all it sees.")
def up(host: str, port: int, gpus: int | None) -> None:
    """Run the API, one worker, the model server and the webhook deliverer on this machine. With no REDIS_URL and DATABASE_URL
    it needs no service at all: SQLite, the local data folder and an embedded broker. Prints the
    dashboard URL with the local key (made on first start and saved, 0600, in the data folder)."""
    from cli.local_key import dashboard_url, ensure_local_key, key_file, save_local_url
    from lmtune.store.database import open_database

    os.umask(PRIVATE_UMASK)
    # one machine, its own user's: webhooks to a receiver on this machine or its network are allowed
    os.environ.setdefault("LMTUNE_WEBHOOK_ALLOW_PRIVATE", "true")
    # its own model server: on a port this process holds (none other can take it, a second `lmtune up`
    # gets another), answering only this API, which shows the secret made for this start
    models_socket = _listening_socket()
    os.environ["LMTUNE_INFERENCE_URL"] = f"http://127.0.0.1:{models_socket.getsockname()[1]}"
    os.environ["LMTUNE_INFERENCE_SECRET"] = secrets.token_urlsafe(32)
    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    click.echo(
        f"data folder {settings.data_dir}; database {settings.database_url.split('@')[-1]}; broker "
        f"{'Redis' if settings.redis_url else 'embedded (SQLite)'}",
        err=True,
    )
    db = open_database(settings.database_url)
    secret, created = ensure_local_key(db, settings.data_dir)
    db.engine.dispose()
    if created:
        click.echo(f"created an API key for this machine, saved in {key_file(settings.data_dir)}", err=True)
    click.echo(f"lmtune: {dashboard_url(host, port, secret)}")
    save_local_url(settings.data_dir, f"{dashboard_url(host, port, None)}v1")
    click.echo(
        f"API: {dashboard_url(host, port, None)}v1 (the `lmtune files|jobs|models` commands use it and the saved key)",
        err=True,
    )
    worker_command = [sys.executable, "-m", "cli", "worker"] + ([] if gpus is None else ["--gpus", str(gpus)])
    # the worker and its trainer run at a lower CPU priority: on a shared machine the API stays responsive
    worker = RestartingChild(
        worker_command,
        nice=WORKER_NICENESS,
        on_restart=lambda code: click.echo(f"the worker exited ({code}); starting another", err=True),
    )
    models = RestartingChild(
        [sys.executable, "-m", "cli", "serve-models", "--fd", str(models_socket.fileno())],
        pass_fds=(models_socket.fileno(),),
        on_restart=lambda code: click.echo(f"the model server exited ({code}); starting another", err=True),
    )
    deliverer = RestartingChild(
        [sys.executable, "-m", "cli", "deliver-webhooks"],
        on_restart=lambda code: click.echo(f"the webhook deliverer exited ({code}); starting another", err=True),
    )
    try:
        serve.callback(host=host, port=port)
    finally:
        deliverer.stop()
        models.stop()
        worker.stop()


def _listening_socket():
    """A socket listening on a free port of 127.0.0.1, for the model server to inherit."""
    import socket

    listening = socket.create_server(("127.0.0.1", 0))
    listening.set_inheritable(True)
    return listening


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.argument("name")
def keys_create(name: str) -> None:
    """Create an API key; its secret is printed once and stored only as a hash."""
    from lmtune.store.keys import create_key

    os.umask(PRIVATE_UMASK)  # the first command on a new data folder makes lmtune.db
    key_id, secret = create_key(_local_database(), name)
    click.echo(f"created {key_id} ({name}); keep this secret, it is not shown again:", err=True)
    click.echo(secret)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def keys_list(as_json: bool) -> None:
    """The API keys of this machine's database (ids and names; secrets are never stored)."""
    from cli.client_commands import console
    from cli.terminal_views import KEY_COLUMNS, table
    from lmtune.store.keys import list_keys

    rows = [{"id": key.id, "name": key.name, "created_at": key.created_at} for key in list_keys(_local_database())]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        console().print(table(rows, KEY_COLUMNS))


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key: requests with it get 401 from now on. Its jobs and files stay."""
    from lmtune.store.keys import revoke_key

    if not revoke_key(_local_database(), key_id):
        raise click.ClickException(f"no key {key_id!r} in this database (`lmtune keys list` shows them)")
    click.echo(f"revoked {key_id}", err=True)


def _local_database():
    """The database the keys commands act on, named on stderr: a server started with another
    LMTUNE_DATA_DIR or DATABASE_URL does not see these keys."""
    from lmtune.store.database import open_database

    settings = _settings()
    where = (
        settings.database_url.split("@")[-1] if os.environ.get("DATABASE_URL") else f"data folder {settings.data_dir}"
    )
    click.echo(f"keys of {where}", err=True)
    return open_database(settings.database_url)


for _group in (
    *CLIENT_GROUPS,
    *EVAL_GROUPS,
    webhooks,
):  # files, jobs, models, evals, graders, webhooks: the HTTP client
    main.add_command(_group)

if __name__ == "__main__":
    main()
