"""A real browser (Debian's Chromium, driven by Playwright) against a real `lmtune up`.

Playwright's own browser download needs the internet, so the system Chromium is used:
`apt-get install -y chromium` (LMTUNE_TEST_CHROMIUM names another binary). Screenshots and
downloads go to test-artifacts/dashboard/<test>/ (git-ignored).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest

from cli.sample_data import chat_examples
from tests.deployment import LocalService, local_service
from tests.service.conftest import jsonl
from tests.waiting import wait_while_progressing, working

CHROMIUM = os.environ.get("LMTUNE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> LocalService:
    with local_service(tmp_path_factory.mktemp("dashboard")) as running:
        yield running


@pytest.fixture(scope="module")
def tuned(service):
    """An SDK client of the service and a finished fine-tune of lmtune-tiny on it: 8 steps, a
    checkpoint every 3 (the newest kept)."""
    client = sdk(service)
    training = client.files.create(file=("t.jsonl", jsonl(chat_examples(16, seed=3, spread=0.5))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="lmtune-tiny",
        training_file=training.id,
        hyperparameters={"n_epochs": 2, "batch_size": 4},
        extra_body={"training": {"learning_rate": 3e-3, "checkpoint_every_steps": 3, "sample_prompts": []}},
    )
    return client, finished(client, service, job.id)


def sdk(service: LocalService) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key=service.key, max_retries=0)


def finished(client: openai.OpenAI, service: LocalService, job_id: str):
    """The job once it has succeeded (waited for while the service works)."""
    job = wait_while_progressing(
        lambda: client.fine_tuning.jobs.retrieve(job_id),
        lambda j: j.status in ("succeeded", "failed"),
        progress=lambda j: (j.status, working(service.process.pid)),
        what=f"the end of {job_id}",
        diagnose=service.log_tail,
    )
    assert job.status == "succeeded", job.error
    return job


def one_criterion_eval(client: openai.OpenAI, name: str, criterion: dict):
    """An eval of items of any shape, graded by one testing criterion."""
    return client.evals.create(
        name=name,
        data_source_config={"type": "custom", "item_schema": {"type": "object"}},
        testing_criteria=[criterion],
    )


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set LMTUNE_TEST_CHROMIUM)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Session:
    page: object
    service: LocalService
    artifacts: Path
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        path = self.artifacts / f"{name}.png"
        self.page.screenshot(path=path, full_page=True)
        return path

    def open_with_key(self, route: str = "") -> None:
        self.page.goto(self.service.printed_url())
        self.page.get_by_role("heading", name="Fine-tuning jobs").wait_for()
        if route:
            self.page.goto(f"{self.service.url}/{route}")


@pytest.fixture
def session(request, browser, service) -> Session:
    artifacts = ARTIFACTS / re.sub(r"\W+", "-", request.node.name)
    artifacts.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(60_000)  # a page action on a loaded machine; training waits are progress-driven
    page = context.new_page()
    opened = Session(page, service, artifacts)
    page.on("request", lambda r: opened.requests.append(r.url))
    page.on("pageerror", lambda error: opened.problems.append(f"page error: {error}"))
    yield opened
    print(f"\nscreenshots and downloads of {request.node.name}: {artifacts}")
    context.close()
    # offline and discreet: every request went to the service itself, none carried the key in its URL
    assert not opened.problems, opened.problems
    for url in opened.requests:
        assert url.startswith((service.url, "blob:", "data:")), f"a request left the service: {url}"
        assert service.key not in url, f"the key went into a URL: {url}"
