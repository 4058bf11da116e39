"""`lmtune evals create|list|get|run` and `lmtune graders run`: the Evals and graders APIs from the
terminal (cli/client_commands.py's conventions: a table, or the server's JSON with --json)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cli import terminal_views as views
from cli.client import ApiError
from cli.client_commands import EXIT_CANCELLED, EXIT_FAILED, Context, client_command

POLL_SECONDS = 1.0
ENDED = ("completed", "failed", "canceled")
EVAL_COLUMNS = [
    ("ID", lambda e: e["id"]),
    ("NAME", lambda e: e["name"]),
    ("CRITERIA", lambda e: ", ".join(c["name"] for c in e["testing_criteria"])),
    ("CREATED", lambda e: views.when(e["created_at"])),
]
RUN_COLUMNS = [
    ("ID", lambda r: r["id"]),
    ("STATUS", lambda r: r["status"]),
    ("MODEL", lambda r: r["model"]),
    ("STEP", lambda r: "" if r.get("step") is None else r["step"]),
    ("PASSED", lambda r: f"{r['result_counts']['passed']}/{r['result_counts']['total']}"),
    ("ERRORED", lambda r: r["result_counts"]["errored"]),
    (
        "SCORES",
        lambda r: ", ".join(
            f"{c['testing_criteria']} {c['mean_score']:.3f}"
            for c in r.get("per_testing_criteria_scores", [])
            if c["mean_score"] is not None
        ),
    ),
]


def _json_argument(value: str, what: str):
    """A JSON value given inline or as a path to a file holding it."""
    path = Path(value)
    text = path.read_text() if path.is_file() else value
    try:
        return json.loads(text)
    except ValueError as error:
        raise click.BadParameter(f"{what} must be JSON or a file of JSON: {error}") from None


@click.group()
def evals() -> None:
    """Evals on the server: a schema of items and the graders that score samples."""


@client_command(evals, "create")
@click.option("--name", required=True)
@click.option("--item-schema", required=True, help="The items' JSON schema (inline JSON or a file).")
@click.option("--criteria", required=True, help="The testing criteria: a JSON list of graders (inline or a file).")
@click.option("--include-sample-schema", is_flag=True, help="Items bring their own samples (jsonl runs).")
def evals_create(ctx: Context, name: str, item_schema: str, criteria: str, include_sample_schema: bool) -> None:
    """Create an eval."""
    body = {
        "name": name,
        "data_source_config": {
            "type": "custom",
            "item_schema": _json_argument(item_schema, "--item-schema"),
            "include_sample_schema": include_sample_schema,
        },
        "testing_criteria": _json_argument(criteria, "--criteria"),
    }
    ctx.show(ctx.client.json("POST", "/evals", json=body), lambda e: views.table([e], EVAL_COLUMNS))


@client_command(evals, "list")
def evals_list(ctx: Context) -> None:
    """Your evals, oldest first."""
    ctx.show(list(ctx.client.pages("/evals")), lambda rows: views.table(rows, EVAL_COLUMNS))


@client_command(evals, "get")
@click.argument("eval_id")
def evals_get(ctx: Context, eval_id: str) -> None:
    """One eval and its runs with their counts and scores."""
    found = ctx.client.json("GET", f"/evals/{eval_id}")
    found["runs"] = list(ctx.client.pages(f"/evals/{eval_id}/runs"))
    ctx.show(found, lambda e: Group(views.table([e], EVAL_COLUMNS), views.table(e["runs"], RUN_COLUMNS)))


@client_command(evals, "run")
@click.argument("eval_id")
@click.option("--data", "data", required=True, help="The items: a local JSONL file (uploaded first) or a file id.")
@click.option("--model", help="The model to sample (catalogue, ft:…, checkpoint); not with --jsonl.")
@click.option("--job", "job_id", help="Instead of --model: every checkpoint the job keeps and its final model.")
@click.option("--prompt", help='The user message, with {{item.*}} (default "{{item.input}}").')
@click.option("--system", help="A system message before it.")
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=256, show_default=True)
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.0, show_default=True)
@click.option("--jsonl", "given", is_flag=True, help="Grade the samples the items bring; sample no model.")
@click.option("--no-follow", is_flag=True, help="Print the run and return at once.")
def evals_run(
    ctx: Context, eval_id, data, model, job_id, prompt, system, max_tokens, temperature, given, no_follow
) -> None:
    """Run an eval, then follow it until it ends (exit status 0 completed, 1 failed, 3 canceled)."""
    if given == bool(model or job_id) or (model and job_id):
        raise click.UsageError("give one of --model, --job or --jsonl")
    source = {"type": "file_id", "id": _file_id(ctx, data)}
    if given:
        runs = [
            ctx.client.json("POST", f"/evals/{eval_id}/runs", json={"data_source": {"type": "jsonl", "source": source}})
        ]
    else:
        template = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt or "{{item.input}}"}
        ]
        data_source = {
            "type": "completions",
            "source": source,
            "input_messages": {"type": "template", "template": template},
            "sampling_params": {"max_completion_tokens": max_tokens, "temperature": temperature},
        }
        if job_id:
            body = {"eval_id": eval_id, "data_source": data_source}
            runs = ctx.client.json("POST", f"/fine_tuning/jobs/{job_id}/evals", json=body)["data"]
        else:
            body = {"data_source": {**data_source, "model": model}}
            runs = [ctx.client.json("POST", f"/evals/{eval_id}/runs", json=body)]
    if not no_follow:
        runs = _follow(ctx, eval_id, runs)
    ctx.show(runs, lambda rows: views.table(rows, RUN_COLUMNS))
    statuses = {run["status"] for run in runs}
    if "failed" in statuses:
        raise SystemExit(EXIT_FAILED)
    if "canceled" in statuses:
        raise SystemExit(EXIT_CANCELLED)


def _file_id(ctx: Context, given: str) -> str:
    path = Path(given)
    if path.is_file():
        uploaded = ctx.client.upload_file(path, purpose="evals")
        click.echo(f"uploaded {path} as {uploaded['id']} ({uploaded['examples']} items)", err=True)
        return uploaded["id"]
    if not given.startswith("file-"):
        raise ApiError(f"{given}: no such local file, and not a file id (file-...)")
    return given


def _follow(ctx: Context, eval_id: str, runs: list[dict]) -> list[dict]:
    """A bar per run (items graded of the total) until every run has ended."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=ctx.as_json) as bars:
        tasks = {run["id"]: bars.add_task(f"{run['model'] or 'jsonl'} {run['status']}", total=None) for run in runs}
        while True:
            runs = [ctx.client.json("GET", f"/evals/{eval_id}/runs/{run['id']}") for run in runs]
            for run in runs:
                bars.update(
                    tasks[run["id"]],
                    description=f"{run['model'] or 'jsonl'} {run['status']}",
                    completed=run["progress"]["graded"],
                    total=run["progress"]["total"],
                )
            if all(run["status"] in ENDED for run in runs):
                return runs
            time.sleep(POLL_SECONDS)


@click.group()
def graders() -> None:
    """Try a grader on one sample (OpenAI's graders API)."""


@client_command(graders, "run")
@click.argument("grader")
@click.option("--sample", required=True, help="The model's output (sample.output_text; output_json if JSON).")
@click.option("--item", default="{}", show_default=True, help="The item (inline JSON or a file).")
def graders_run(ctx: Context, grader: str, sample: str, item: str) -> None:
    """Grade SAMPLE with GRADER (inline JSON or a file): the reward and any errors."""
    body = {"grader": _json_argument(grader, "GRADER"), "model_sample": sample, "item": _json_argument(item, "--item")}
    ctx.show(ctx.client.json("POST", "/fine_tuning/alpha/graders/run", json=body), _reward)


def _reward(answer: dict) -> str:
    errors = {key: value for key, value in answer["metadata"]["errors"].items() if value}
    lines = [f"reward {answer['reward']:.4f}"]
    lines += [f"  {name}: {score:.4f}" for name, score in answer["sub_rewards"].items()]
    lines += [f"  error {key}: {value}" for key, value in errors.items()]
    return "\n".join(lines)


GROUPS = (evals, graders)
