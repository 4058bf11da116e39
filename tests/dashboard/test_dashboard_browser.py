"""The dashboard in a real browser against a real `lmtune up`: what a user sees and clicks."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from cli.sample_data import chat_examples, preference_examples, write_jsonl
from tests.waiting import wait_while_progressing, working

pytestmark = pytest.mark.integration


def test_the_key_comes_from_the_fragment_and_refused_input_is_shown_where_it_belongs(session, tmp_path):
    page = session.page
    session.open_with_key()
    assert "key=" not in page.url and page.url.endswith("#/jobs")
    assert page.evaluate("localStorage.getItem('lmtune.apiKey')") == session.service.key

    page.get_by_role("link", name="New job").first.click()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "system", "content": "hi"}]}\n{not json\n' + '{"text": "fine"}\n' * 10)
    page.get_by_label("Upload a JSONL file").first.set_input_files(bad)
    page.get_by_role("button", name="Create job").click()
    problems = page.locator(".line-errors li")
    problems.first.wait_for()
    assert problems.all_inner_texts() == [
        "Line 1: at least one message with the assistant role is required",
        "Line 2: invalid JSON (Expecting property name enclosed in double quotes at column 2)",
    ]
    assert page.get_by_label("Upload a JSONL file").first.get_attribute("aria-invalid") == "true"
    session.screenshot("1-bad-file")

    # a good file with a refused setting: the file is stored, the job is not, the message sits by its field
    page.get_by_label("Upload a JSONL file").first.set_input_files(
        write_jsonl(chat_examples(12, seed=4), tmp_path / "good.jsonl")
    )
    page.get_by_label("Learning rate", exact=True).fill("-1")
    page.get_by_role("button", name="Create job").click()
    field_error = page.locator('[id="training.learning_rate-error"]')
    field_error.get_by_role("alert").wait_for()
    assert (
        "learning_rate" in field_error.inner_text()
        and page.get_by_label("Learning rate", exact=True).get_attribute("aria-invalid") == "true"
    )
    session.screenshot("2-bad-setting")

    page.get_by_role("link", name="Files").click()
    row = page.get_by_role("row").filter(has_text="good.jsonl")
    row.wait_for()
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=re.compile("^Delete good.jsonl")).click()
    page.get_by_text("No files yet").wait_for()

    page.get_by_role("button", name="Forget key").click()
    page.get_by_role("heading", name="Sign in with an API key").wait_for()
    assert page.evaluate("localStorage.getItem('lmtune.apiKey')") is None
    page.get_by_label("API key").fill("lmt-not-a-key")
    page.get_by_role("button", name="Use this key").click()
    page.get_by_text("The server refused this key").wait_for()
    page.get_by_label("API key").fill(session.service.key)
    page.get_by_role("button", name="Use this key").click()
    page.get_by_role("heading", name="Fine-tuning jobs").wait_for()


@pytest.mark.slow
def test_a_job_made_in_the_form_trains_live_pauses_resumes_and_its_downloads_work(session, tmp_path):
    page = session.page
    session.open_with_key("#/new")
    page.get_by_role("heading", name="New fine-tuning job").wait_for()
    uploads = page.get_by_label("Upload a JSONL file")
    uploads.nth(0).set_input_files(write_jsonl(chat_examples(16, seed=11, spread=0.5), tmp_path / "train.jsonl"))
    uploads.nth(1).set_input_files(write_jsonl(chat_examples(10, seed=12, spread=0.5), tmp_path / "valid.jsonl"))
    page.get_by_label("Model", exact=True).select_option("lmtune-tiny")
    page.get_by_label("Epochs").fill("2")  # 8 steps
    page.get_by_label("Batch size").fill("4")
    page.get_by_label("Learning rate", exact=True).fill("0.002")
    page.get_by_label("Suffix").fill("browser")
    page.get_by_text("More options").click()
    page.get_by_label("Checkpoint every (steps)").fill("3")
    page.get_by_label("Validate every (steps)").fill("2")
    page.get_by_role("button", name="Create job").click()
    page.wait_for_url(re.compile(r"#/jobs/ftjob-"))
    job_id = page.url.rsplit("/", 1)[1]

    status = page.locator(".status-line .badge")
    loss = page.locator("figure.chart", has_text="Loss").locator(".count")

    def look() -> tuple[str, int]:
        """The job's status and how many steps the loss chart shows (drawn once the first step's metrics arrive)."""
        plotted = re.match(r"(\d+) steps plotted", loss.inner_text()) if loss.count() else None
        return status.inner_text(), int(plotted[1]) if plotted else 0

    def working_or_moving(
        seen,
    ) -> tuple:  # a trainer starting on a loaded machine changes nothing on the page for a while
        return seen, working(session.service.process.pid)

    def wait(done, what):
        return wait_while_progressing(
            look, done, progress=working_or_moving, what=what, interval=0.5, diagnose=session.service.log_tail
        )

    # paused as soon as it runs, so that however fast the machine the job cannot end first
    wait(lambda seen: seen[0] == "running", "the running status")
    page.get_by_role("button", name="Pause").click()
    _, paused_at = wait(lambda seen: seen[0] == "paused", "the paused status")
    buttons = page.get_by_role("group", name="Job actions").get_by_role("button")

    def enabled() -> list[str]:
        """The job's buttons a user can press: those its `allowed_actions` lists."""
        return [button.inner_text() for button in buttons.all() if button.is_enabled()]

    assert enabled() == ["Resume", "Cancel", "Delete"]
    assert paused_at < 8
    session.screenshot("1-paused")

    page.get_by_role("button", name="Resume").click()
    _, first = wait(lambda seen: seen[1] > paused_at, "new points on the chart as the resumed job trains")
    session.screenshot("2-training")
    wait(lambda seen: seen[1] > first or seen[0] != "running", "more points as it goes on")

    checkpoints = page.locator("tr.checkpoint")
    wait_while_progressing(
        lambda: (look(), checkpoints.count()),
        lambda seen: seen[1] > 0,
        progress=working_or_moving,
        what="a checkpoint in the table",
        interval=0.5,
        diagnose=session.service.log_tail,
    )
    checkpoint = checkpoints.first
    with page.expect_download() as started:
        checkpoint.get_by_role("button", name=re.compile("as a tar archive")).click()
    archive = session.artifacts / started.value.suggested_filename
    started.value.save_as(archive)
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames()}
    assert {"manifest.json", "model.safetensors", "config.json"} <= names

    wait(lambda seen: seen[0] in ("succeeded", "failed", "cancelled"), "the end of the job")
    assert look() == ("succeeded", 8), session.service.log_tail()
    assert enabled() == ["Delete"]
    assert page.locator("figure.chart", has_text="Learning rate").locator(".count").inner_text() == "8 steps plotted"
    # in the events list (the live region may announce the same words at that moment)
    page.get_by_role("list", name="Events, newest first").get_by_text("The job has successfully completed").wait_for()
    page.get_by_text("Loss curve picture").click()
    page.get_by_role("img", name=re.compile("as drawn by the trainer")).wait_for()
    with page.expect_download() as final:
        page.get_by_role("button", name="Download the results CSV").click()
    results = session.artifacts / final.value.suggested_filename
    final.value.save_as(results)
    assert results.read_text().splitlines()[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    session.screenshot("3-succeeded")

    # the final model as GGUF: a worker exports it, then its files are listed for download
    export = page.get_by_role("button", name="Export the final model as GGUF q8_0")
    export.click()
    exporting = export.locator("xpath=following-sibling::span[@role='status'][1]")  # the state beside the button
    wait_while_progressing(
        exporting.inner_text,
        lambda seen: "ready" in seen or "failed" in seen,
        progress=working_or_moving,
        what="the GGUF export",
        interval=0.5,
        diagnose=session.service.log_tail,
    )
    assert "GGUF q8_0 ready" in exporting.inner_text()
    exported = page.get_by_role("table", name="Files of the GGUF q8_0 export of the final model")
    exported.get_by_text(f"{job_id}-final-q8_0.gguf").wait_for()
    with page.expect_download() as modelfile:
        exported.get_by_role("button", name="Download Modelfile").click()
    saved = session.artifacts / "Modelfile"
    modelfile.value.save_as(saved)
    assert saved.read_text().startswith(f"FROM ./{job_id}-final-q8_0.gguf")

    page.get_by_role("link", name="Jobs").first.click()
    page.get_by_label("Status", exact=True).select_option("succeeded")
    page.get_by_role("link", name=job_id).wait_for()
    page.get_by_label("Status", exact=True).select_option("running")
    page.get_by_text("No running jobs").wait_for()

    page.get_by_role("link", name="Models").click()
    model = f"ft:lmtune-tiny:browser:{job_id}"
    row = page.get_by_role("row").filter(has_text=model)
    row.wait_for()
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Delete {model}").click()
    row.wait_for(state="detached")
    catalogue = page.get_by_role("row").filter(has_text="lmtune-tiny").first  # the catalogue stays
    catalogue.get_by_role("cell", name="ready", exact=True).wait_for()  # on this machine (it is made locally)

    page.get_by_role("link", name="Jobs").first.click()
    page.get_by_role("link", name=job_id).click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete", exact=True).click()
    page.wait_for_url(re.compile(r"#/jobs$"))
    page.get_by_role("link", name=job_id).wait_for(state="detached")
    assert not (
        Path(session.service.env["LMTUNE_DATA_DIR"]) / "jobs" / job_id
    ).exists()  # its checkpoints and model are gone from disk


@pytest.mark.slow
def test_a_dpo_job_made_in_the_form_charts_its_rewards_and_preference_accuracy(session, tmp_path):
    page = session.page
    session.open_with_key("#/new")
    page.get_by_role("heading", name="New fine-tuning job").wait_for()
    assert page.get_by_label("Beta (DPO)").is_disabled()  # a supervised job has no beta
    uploads = page.get_by_label("Upload a JSONL file")
    uploads.nth(0).set_input_files(write_jsonl(preference_examples(12, seed=21), tmp_path / "pairs.jsonl"))
    uploads.nth(1).set_input_files(write_jsonl(preference_examples(10, seed=22), tmp_path / "valid-pairs.jsonl"))
    page.get_by_label("Model", exact=True).select_option("lmtune-tiny")
    page.get_by_label("Method").select_option("dpo")
    page.get_by_label("Beta (DPO)").fill("0.2")
    page.get_by_label("Epochs").fill("1")
    page.get_by_label("Batch size").fill("4")  # 3 steps
    page.get_by_label("Learning rate", exact=True).fill("0.002")
    page.get_by_text("More options").click()
    page.get_by_label("Validate every (steps)").fill("1")
    page.get_by_role("button", name="Create job").click()
    page.wait_for_url(re.compile(r"#/jobs/ftjob-"))
    status = page.locator(".status-line .badge")
    charts = {
        name: page.locator("figure.chart", has_text=name).locator(".count")
        for name in ("Rewards", "Preference accuracy")
    }
    wait_while_progressing(
        lambda: (status.inner_text(), *(chart.inner_text() if chart.count() else "" for chart in charts.values())),
        lambda seen: seen[0] in ("succeeded", "failed", "cancelled"),
        progress=lambda seen: (seen, working(session.service.process.pid)),
        what="the end of the DPO job",
        interval=0.5,
        diagnose=session.service.log_tail,
    )
    assert status.inner_text() == "succeeded", session.service.log_tail()
    for chart in charts.values():
        assert chart.inner_text() == "3 steps plotted"
    assert page.locator("figure.chart", has_text="Token accuracy").count() == 0
    assert page.locator("dl.facts > div", has=page.locator("dt", has_text="Beta")).locator("dd").inner_text() == "0.2"
    session.screenshot("dpo-succeeded")
