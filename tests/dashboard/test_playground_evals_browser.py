"""The playground and the evals pages in a real browser against a real `lmtune up`: a fine-tuned model
answers beside its base (and a checkpoint) as the API answers, streamed; an eval's runs, its scores
across a job's checkpoints and each item's grades show as the API holds them."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

import httpx
import pytest
from playwright.sync_api import expect

from cli.sample_data import TOOLS, chat_examples
from tests.dashboard.conftest import finished, one_criterion_eval, sdk
from tests.service.conftest import jsonl
from tests.waiting import wait_while_progressing, working

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:The Evals API is deprecated:DeprecationWarning"),
]
SYSTEM = "Answer in capitals."  # as in the training rows
PROMPTS = [example["messages"][1]["content"] for example in chat_examples(3, seed=9)]
MAX_TOKENS = 12


def greedy(client, model: str, messages: list[dict]) -> str:
    answer = client.chat.completions.create(
        model=model, messages=messages, temperature=0, max_completion_tokens=MAX_TOKENS
    )
    return answer.choices[0].message.content


def say(session, text: str, answers: int) -> None:
    """Send `text`; wait until each pane shown has `answers` finished answers."""
    page = session.page
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_role("button", name="Send").click()
    finished = page.locator('.pane:not([hidden]) .message.assistant[aria-busy="false"]')
    wanted = answers * page.locator(".pane:not([hidden])").count()
    wait_while_progressing(
        finished.count,
        lambda n: n == wanted,
        progress=lambda n: (n, working(session.service.process.pid)),
        what=f"{wanted} answers in the panes",
        interval=0.3,
        diagnose=session.service.log_tail,
    )


def test_the_playground_streams_a_fine_tuned_model_beside_its_base_and_a_checkpoint(session, tuned):
    client, job = tuned
    base, tuned_model = "lmtune-tiny", job.fine_tuned_model
    kept = client.fine_tuning.jobs.checkpoints.list(job.id).data
    checkpoint = min(kept, key=lambda c: c.step_number).fine_tuned_model_checkpoint
    page = session.page
    chats = []
    page.on("response", lambda r: chats.append(r) if r.url.endswith("/v1/chat/completions") else None)
    session.open_with_key(f"#/jobs/{job.id}")
    page.get_by_role("link", name="Compare with its base").click()
    page.get_by_role("heading", name="Playground").wait_for()
    assert page.get_by_label("Model A", exact=True).input_value() == tuned_model
    assert page.get_by_label("Model B", exact=True).input_value() == base
    page.get_by_label("System message").fill(SYSTEM)
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max tokens").fill(str(MAX_TOKENS))
    pane = {side: page.locator(f'.pane[data-side="{side}"]') for side in "ab"}

    def answer(side: str, number: int) -> str:
        return pane[side].locator(".message.assistant .text").nth(number).text_content()

    say(session, PROMPTS[0], 1)
    session.screenshot("1-first-answers")
    first = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPTS[0]}]
    expected = {model: greedy(client, model, first) for model in (tuned_model, base)}
    assert expected[tuned_model] != expected[base]  # the panes could not be told apart otherwise
    assert answer("a", 0) == expected[tuned_model] and answer("b", 0) == expected[base]
    assert all(r.headers["content-type"].startswith("text/event-stream") for r in chats) and len(chats) == 2
    usage = client.chat.completions.create(
        model=tuned_model, messages=first, temperature=0, max_completion_tokens=MAX_TOKENS
    ).usage
    assert f"{usage.completion_tokens} tokens in" in pane["a"].locator(".answer-stats").inner_text()

    # the second turn: each side is sent its own history
    say(session, PROMPTS[1], 2)
    sent = {json.loads(r.request.post_data)["model"]: json.loads(r.request.post_data) for r in chats[2:]}
    for model in (tuned_model, base):
        assert sent[model]["stream"] is True
        assert sent[model]["messages"] == [
            *first,
            {"role": "assistant", "content": expected[model]},
            {"role": "user", "content": PROMPTS[1]},
        ]
        assert sent[model]["temperature"] == 0 and sent[model]["max_completion_tokens"] == MAX_TOKENS
    assert answer("a", 1) == greedy(client, tuned_model, sent[tuned_model]["messages"])

    # a checkpoint in place of the base, in a new conversation; the address names it
    page.get_by_label("Model B", exact=True).fill(checkpoint)
    page.get_by_label("Model B", exact=True).press("Tab")
    assert checkpoint in unquote(page.url)
    page.get_by_role("button", name="New conversation").click()
    say(session, PROMPTS[2], 1)
    again = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPTS[2]}]
    assert answer("b", 0) == greedy(client, checkpoint, again)
    assert checkpoint in pane["b"].locator(".message.assistant .who").inner_text()

    # tools: text that is not JSON is stopped at its field; a refused tool is the API's message in each pane
    page.get_by_text("Tools", exact=True).click()
    page.get_by_label("Tools (JSON)").fill("[{not json")
    page.get_by_label("Message", exact=True).fill(PROMPTS[0])
    page.get_by_role("button", name="Send").click()
    assert "Not JSON" in page.locator(".field", has=page.get_by_label("Tools (JSON)")).get_by_role("alert").inner_text()
    assert page.get_by_label("Tools (JSON)").get_attribute("aria-invalid") == "true"
    assert len(chats) == 6  # nothing more was sent
    page.get_by_label("Tools (JSON)").fill('[{"type": "function", "function": {"name": "get weather"}}]')
    page.get_by_role("button", name="Send").click()
    for side in "ab":
        refusal = pane[side].get_by_role("alert")
        refusal.wait_for()
        assert "tools[0].function.name" in refusal.inner_text() and "letters, digits" in refusal.inner_text()
    session.screenshot("2-refused-tool")


def test_the_evals_pages_show_runs_checkpoint_scores_and_each_items_grades(session, tuned, tmp_path):
    client, job = tuned
    service, page = session.service, session.page
    exact = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}
    evaluation = one_criterion_eval(client, "exact answer", {**exact, "operation": "eq"})
    given = client.evals.runs.create(
        evaluation.id,
        name="given answers",
        data_source={
            "type": "jsonl",
            "source": {
                "type": "file_content",
                "content": [
                    {"item": {"answer": "Paris"}, "sample": {"output_text": "Paris"}},
                    {"item": {"answer": "Rome"}, "sample": {"output_text": "Roma"}},
                    {"item": {"answer": "Oslo"}, "sample": {"output_text": "Oslo"}},
                ],
            },
        },
    )
    items = client.files.create(
        file=("items.jsonl", jsonl([{"input": p, "answer": p.upper()} for p in PROMPTS])), purpose="evals"
    )
    on_job = httpx.post(
        f"{service.url}/v1/fine_tuning/jobs/{job.id}/evals",
        headers={"Authorization": f"Bearer {service.key}"},
        json={
            "eval_id": evaluation.id,
            "data_source": {
                "type": "completions",
                "source": {"type": "file_id", "id": items.id},
                "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.input}}"}]},
                "sampling_params": {"max_completion_tokens": 8, "temperature": 0},
            },
        },
    )
    assert on_job.status_code == 200, on_job.text
    steps = sorted(run["step"] for run in on_job.json()["data"])

    session.open_with_key("#/evals")
    page.get_by_role("link", name="exact answer").click()
    page.get_by_role("heading", name="Eval exact answer").wait_for()
    runs = page.locator("section", has=page.get_by_role("heading", name="Runs", exact=True)).locator("tbody tr")
    wait_while_progressing(
        lambda: runs.all_inner_texts(),
        lambda rows: len(rows) == 1 + len(steps) and all("completed" in row for row in rows),
        progress=lambda rows: (rows, working(service.process.pid)),
        what="every run completed on the eval's page",
        interval=0.5,
        diagnose=service.log_tail,
    )
    scores = page.locator("section", has=page.get_by_role("heading", name="Scores across checkpoints"))
    shown = [row.split("\t") for row in scores.locator("tbody tr").all_inner_texts()]
    by_step = {run.step: run for run in client.evals.runs.list(evaluation.id) if run.model_extra["step"] is not None}
    assert [int(step) for step, _ in shown] == steps
    for step, score in shown:
        mean = by_step[int(step)].model_extra["per_testing_criteria_scores"][0]["mean_score"]
        assert float(score) == pytest.approx(mean, abs=1e-3)
    session.screenshot("3-eval")

    # the failures of the run with given answers, then all its items
    runs.filter(has_text="given answers").get_by_role("link", name="1 failed").click()
    page.get_by_role("heading", name="Run given answers").wait_for()
    assert "3 of 3 items graded: 2 passed, 1 failed" in page.locator(".status-line").inner_text()
    item_rows = page.locator("section", has=page.get_by_role("heading", name="Items", exact=True)).locator("tbody tr")
    item_rows.first.wait_for()
    assert item_rows.count() == 1
    failure = item_rows.first.inner_text()
    assert "Roma" in failure and '"answer": "Rome"' in failure and "exact 0 failed" in failure
    session.screenshot("4-failures")
    page.get_by_label("Show", exact=True).select_option("all items")
    expect(item_rows).to_have_count(3)
    assert [row.split("\t")[1] for row in item_rows.all_inner_texts()] == ["pass", "fail", "pass"]
    assert given.id in page.url

    # a run started from the eval's page, on items uploaded there, answers as the API shows
    page.get_by_role("link", name="exact answer").click()
    page.get_by_label("Model", exact=True).fill(job.fine_tuned_model)
    page.get_by_label("Run name (optional)").fill("from the page")
    upload = tmp_path / "page-items.jsonl"
    upload.write_bytes(jsonl([{"input": p, "answer": "-"} for p in PROMPTS[:2]]))
    page.get_by_label("or upload items").set_input_files(upload)
    page.get_by_text("Uploaded page-items.jsonl: 2 items.").wait_for()
    page.get_by_role("button", name="Start run").click()
    started = runs.filter(has_text="from the page")
    wait_while_progressing(
        lambda: started.all_inner_texts(),
        lambda rows: rows and "completed" in rows[0],
        progress=lambda rows: (rows, working(service.process.pid)),
        what="the run started on the page to complete",
        interval=0.5,
        diagnose=service.log_tail,
    )
    started.get_by_role("link", name="from the page").click()
    page.get_by_role("heading", name="Run from the page").wait_for()
    run_id = re.search(r"/runs/([\w-]+)", page.url)[1]
    made = client.evals.runs.output_items.list(run_id, eval_id=evaluation.id)
    expect(item_rows).to_have_count(2)
    answers = item_rows.locator(".answer").all_text_contents()
    assert answers == [item.sample.output_text for item in made.data]
    assert job.fine_tuned_model in page.locator(".facts").inner_text()


ASK = "What is the weather in Paris?"
WEATHER = TOOLS[0]  # get_weather(city)


@pytest.fixture(scope="module")
def caller(service) -> str:
    """A fine-tune of lmtune-tiny that learnt one tool call by heart: asked ASK with the tools, it
    calls get_weather for Paris (the random tiny model never writes a call that parses)."""
    client = sdk(service)
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    row = {
        "messages": [{"role": "user", "content": ASK}, {"role": "assistant", "content": None, "tool_calls": [call]}],
        "tools": [WEATHER],
    }
    training = client.files.create(file=("calls.jsonl", jsonl([row] * 10)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="lmtune-tiny",
        training_file=training.id,
        hyperparameters={"n_epochs": 6, "batch_size": 1},  # 60 steps: the call is word-perfect from about 45
        seed=5,
        extra_body={
            "training": {
                "learning_rate": 1e-2,
                "lr_scheduler": "constant",
                "warmup_ratio": 0,
                "max_seq_length": 1024,  # the tool's schema is in the prompt, a token a byte
                "sample_prompts": [],
            }
        },
    )
    job = finished(client, service, job.id)
    learnt = job.model_extra["metrics"]["train_mean_token_accuracy"]
    assert learnt == 1.0, f"the call was not learnt by heart (token accuracy {learnt}): more epochs"
    return job.fine_tuned_model


def test_the_playground_shows_a_models_tool_call_and_sends_its_result_back(session, caller):
    client, page = sdk(session.service), session.page
    chats = []
    page.on("request", lambda r: chats.append(r) if r.url.endswith("/v1/chat/completions") else None)
    session.open_with_key(f"#/playground?a={caller}")
    page.get_by_role("heading", name="Playground").wait_for()
    page.get_by_label("Temperature").fill("0")
    page.get_by_text("Tools", exact=True).click()
    page.get_by_label("Tools (JSON)").fill(json.dumps([WEATHER]))
    pane = page.locator('.pane[data-side="a"]')
    say(session, ASK, 1)
    session.screenshot("tool-call")
    [made] = (
        client.chat.completions.create(
            model=caller, messages=[{"role": "user", "content": ASK}], tools=[WEATHER], temperature=0
        )
        .choices[0]
        .message.tool_calls
    )
    assert made.function.name == "get_weather" and json.loads(made.function.arguments) == {"city": "Paris"}
    shown = pane.locator(".tool-calls li")
    expect(shown).to_have_count(1)
    assert shown.locator("code").inner_text() == f"get_weather({made.function.arguments})"
    assert pane.locator(".answer-stats").inner_text().endswith("· tool_calls")

    # the call's result, filled in its field, goes back with the call it answers
    result = shown.get_by_role("textbox", name=re.compile(r"^Result of get_weather \(call_"))
    result.fill('{"degrees": 21}')
    say(session, "", 2)
    sent = json.loads(chats[-1].post_data)["messages"]
    call_id = re.search(r"\((call_[^)]+)\)", result.get_attribute("aria-label"))[1]
    assert sent[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": made.function.arguments},
            }
        ],
    }
    assert sent[2] == {"role": "tool", "tool_call_id": call_id, "content": '{"degrees": 21}'}
    assert pane.locator(".message.tool .who").inner_text() == f"Result of {call_id}"
