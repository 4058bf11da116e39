"""The dashboard's Webhooks page and the New job form's estimate, in a real browser against a real
`lmtune up` (whose deliverer sends to a receiver in this test)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from cli.sample_data import chat_examples, write_jsonl
from tests.waiting import wait_while_progressing
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration


def test_an_endpoint_made_on_the_page_hears_of_a_job_s_end_and_shows_the_delivery(session):
    page = session.page
    receiver = Receiver()
    try:
        session.open_with_key("#/webhooks")
        page.get_by_role("heading", name="Webhooks").wait_for()
        page.get_by_label("Receiver URL").fill(receiver.url)
        page.get_by_role("button", name="Add endpoint").click()
        secret = page.locator("code.secret").inner_text()
        assert secret.startswith("whsec_")
        page.get_by_role("button", name="Send test event").click()
        page.get_by_text("the receiver answered 200").wait_for()
        openai.OpenAI(api_key="x").webhooks.unwrap(
            receiver.received[0].body, receiver.received[0].headers, secret=secret
        )

        # a job of this key ends: the deliverer of `lmtune up` sends its event, and the page shows it
        api = httpx.Client(
            base_url=f"{session.service.url}/v1", headers={"Authorization": f"Bearer {session.service.key}"}
        )
        rows = "".join(json.dumps(row) + "\n" for row in chat_examples(12, seed=2))
        file_id = api.post("/files", files={"file": ("t.jsonl", rows)}, data={"purpose": "fine-tune"}).json()["id"]
        job = api.post("/fine_tuning/jobs", json={"model": "lmtune-tiny", "training_file": file_id}).json()
        api.post(f"/fine_tuning/jobs/{job['id']}/cancel")
        wait_while_progressing(lambda: len(receiver.received), lambda n: n >= 2, what="the job's event delivered")
        page.reload()
        row = page.get_by_role("row").filter(has_text=job["id"])
        row.wait_for()
        assert "succeeded" in row.inner_text() and "fine_tuning.job.cancelled" in row.inner_text()
        session.screenshot("webhooks")
    finally:
        receiver.close()


def test_the_new_job_form_estimates_before_creating(session, tmp_path):
    page = session.page
    session.open_with_key("#/new")
    page.get_by_label("Upload a JSONL file").first.set_input_files(
        write_jsonl(chat_examples(12, seed=4), tmp_path / "estimate.jsonl")
    )
    page.get_by_label("Epochs").fill("2")
    page.get_by_label("Batch size").fill("4")
    page.get_by_role("button", name="Estimate").click()
    card = page.get_by_role("region", name="Estimate")
    card.wait_for()
    text = card.inner_text().lower()  # the terms are shown in capitals
    assert "steps\n6\n" in text and "tokens trained" in text and "peak memory" in text
    session.screenshot("estimate")
    page.get_by_role("button", name="Create job").click()
    page.wait_for_url("**/#/jobs/ftjob-*")
    files = httpx.get(
        f"{session.service.url}/v1/files", headers={"Authorization": f"Bearer {session.service.key}"}
    ).json()["data"]
    assert [f["filename"] for f in files].count("estimate.jsonl") == 1  # the estimate's upload was reused
