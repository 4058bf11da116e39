"""The Evals and graders APIs through the unmodified `openai` SDK (bound to the app), with the real
eval runner taking the runs the in-memory queue was sent (the worker's code, in this process)."""

import openai
import pytest

from lmtune.store.evals import eval_run_queue
from tests.helpers import EXACT, FUZZY
from workers.eval_runner import run_next_eval
from workers.job_runner import WorkerContext

# the SDK warns that OpenAI shuts its Evals API down: lmtune keeps it
pytestmark = pytest.mark.filterwarnings("ignore:The Evals API is deprecated:DeprecationWarning")
ITEM_SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"],
}


def sdk(api, headers) -> openai.OpenAI:
    key = headers["Authorization"].split()[1]
    return openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=api.client, max_retries=0)


def work(api) -> None:
    """Run every eval run the API queued, as a worker of the evals queue does."""
    context = WorkerContext(api.settings, api.client.app.state.db, "test-worker", 0, api.queue)
    for _ in api.queue.sent:
        run_next_eval(context, eval_run_queue(api.settings.queue_prefix))
    api.queue.sent.clear()


def make_eval(client, criteria=(EXACT, FUZZY)):
    return client.evals.create(
        name="capitals",
        data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA, "include_sample_schema": True},
        testing_criteria=list(criteria),
        metadata={"team": "search"},
    )


ROWS = [
    {"item": {"question": "France?", "answer": "Paris"}, "sample": {"output_text": "Paris"}},
    {"item": {"question": "Italy?", "answer": "Rome"}, "sample": {"output_text": "rome!"}},
    {"item": {"question": "Spain?", "answer": "Madrid"}, "sample": {"output_text": "Lisbon"}},
]


def test_graders_run_and_validate_answer_as_openai_does(api):
    client = sdk(api, api.alice)
    grader = {**FUZZY, "input": "{{sample.output_json.city}}"}
    ran = client.fine_tuning.alpha.graders.run(
        grader=grader, model_sample='{"city": "Paris"}', item={"answer": "paris"}
    )
    assert ran.reward == 1.0 and ran.metadata.name == "fuzzy" and ran.metadata.type == "text_similarity"
    assert ran.metadata.errors.invalid_variable_error is False
    missing = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="not json", item={"answer": "x"})
    assert missing.reward == 0 and missing.metadata.errors.invalid_variable_error is True
    python = client.fine_tuning.alpha.graders.run(
        grader={"type": "python", "name": "p", "source": "def grade(sample, item):\n    raise ValueError('nope')"},
        model_sample="x",
    )
    assert python.reward == 0 and "ValueError: nope" in python.metadata.errors.python_grader_runtime_error_details
    multi = {"type": "multi", "name": "m", "graders": {"a": EXACT, "b": FUZZY}, "calculate_output": "a + b"}
    assert client.fine_tuning.alpha.graders.validate(grader=multi).grader is not None
    with pytest.raises(openai.BadRequestError, match="calculate_output"):
        client.fine_tuning.alpha.graders.validate(grader={**multi, "calculate_output": "a + c"})
    judge = {
        "type": "score_model",
        "name": "j",
        "model": "ft:lmtune-tiny:ftjob-0123",
        "input": [{"role": "user", "content": "x"}],
    }
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.alpha.graders.validate(grader=judge)


def test_cosine_is_refused_in_graders_run_as_openai_keeps_it_for_evals(api):
    client = sdk(api, api.alice)
    with pytest.raises(openai.BadRequestError, match="cosine needs an embedding model"):
        client.fine_tuning.alpha.graders.run(
            grader={**FUZZY, "evaluation_metric": "cosine"}, model_sample="x", item={"answer": "y"}
        )


def test_evals_are_created_listed_updated_and_deleted_per_key(api):
    alice, bob = sdk(api, api.alice), sdk(api, api.bob)
    created = make_eval(alice)
    assert created.id.startswith("eval_") and created.data_source_config.type == "custom"
    assert created.data_source_config.schema_["properties"]["item"] == ITEM_SCHEMA
    assert [c.name for c in created.testing_criteria] == ["exact", "fuzzy"]
    assert [e.id for e in alice.evals.list()] == [created.id]
    assert list(bob.evals.list()) == []
    with pytest.raises(openai.NotFoundError):
        bob.evals.retrieve(created.id)
    renamed = alice.evals.update(created.id, name="capital cities")
    assert renamed.name == "capital cities" and alice.evals.retrieve(created.id).metadata == {"team": "search"}
    assert alice.evals.delete(created.id).deleted
    with pytest.raises(openai.NotFoundError):
        alice.evals.retrieve(created.id)


def test_an_eval_body_that_cannot_run_is_refused_naming_the_field(api):
    client = sdk(api, api.alice)
    with pytest.raises(openai.BadRequestError, match="item_schema"):
        client.evals.create(
            data_source_config={"type": "custom", "item_schema": {"type": "nonsense"}},
            testing_criteria=[EXACT],
        )
    with pytest.raises(openai.BadRequestError, match="pass_threshold"):
        client.evals.create(
            data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA},
            testing_criteria=[{k: v for k, v in FUZZY.items() if k != "pass_threshold"}],
        )


def test_a_jsonl_run_grades_the_given_samples(api):
    client = sdk(api, api.alice)
    evaluation = make_eval(client)
    run = client.evals.runs.create(
        evaluation.id, name="given", data_source={"type": "jsonl", "source": {"type": "file_content", "content": ROWS}}
    )
    assert run.status == "queued" and run.id.startswith("evalrun_")
    work(api)
    run = client.evals.runs.retrieve(run.id, eval_id=evaluation.id)
    assert run.status == "completed"
    # Paris: exact and fuzzy pass; "rome!" vs Rome: fuzzy only (1.0 after processing); Lisbon: neither
    assert (run.result_counts.total, run.result_counts.passed, run.result_counts.failed) == (3, 1, 2)
    assert {r.testing_criteria: (r.passed, r.failed) for r in run.per_testing_criteria_results} == {
        "exact": (1, 2),
        "fuzzy": (2, 1),
    }
    assert run.report_url.startswith("http://testserver/#/evals/")
    items = list(client.evals.runs.output_items.list(run.id, eval_id=evaluation.id))
    assert [i.datasource_item_id for i in items] == [0, 1, 2]
    assert [(r.name, r.passed) for r in items[1].results] == [("exact", False), ("fuzzy", True)]
    failures = client.evals.runs.output_items.list(run.id, eval_id=evaluation.id, status="fail")
    assert [i.datasource_item["answer"] for i in failures] == ["Rome", "Madrid"]
    one = client.evals.runs.output_items.retrieve(items[0].id, eval_id=evaluation.id, run_id=run.id)
    assert one.status == "pass" and one.sample.output_text == "Paris"


def test_a_completions_run_samples_the_model_on_every_item_and_can_be_cancelled_or_deleted(api):
    client, bob = sdk(api, api.alice), sdk(api, api.bob)
    evaluation = make_eval(client)
    source = {
        "type": "completions",
        "model": "lmtune-tiny",
        "input_messages": {
            "type": "template",
            "template": [{"role": "user", "content": "Capital of {{item.question}}"}],
        },
        "sampling_params": {"max_completion_tokens": 4, "temperature": 0},
        "source": {"type": "file_content", "content": [{"item": row["item"]} for row in ROWS]},
    }
    run = client.evals.runs.create(evaluation.id, data_source=source)
    with pytest.raises(openai.NotFoundError):
        bob.evals.runs.retrieve(run.id, eval_id=evaluation.id)
    work(api)
    run = client.evals.runs.retrieve(run.id, eval_id=evaluation.id)
    assert run.status == "completed" and run.result_counts.total == 3 and run.model == "lmtune-tiny"
    usage = run.per_model_usage[0]
    assert usage.run_model_name == "lmtune-tiny" and usage.invocation_count == 3 and usage.completion_tokens > 0
    item = next(iter(client.evals.runs.output_items.list(run.id, eval_id=evaluation.id)))
    assert item.sample.input[0].content == "Capital of France?" and item.sample.usage.completion_tokens <= 4
    queued = client.evals.runs.create(evaluation.id, data_source=source)
    assert client.evals.runs.cancel(queued.id, eval_id=evaluation.id).status == "canceled"
    with pytest.raises(openai.ConflictError):
        client.evals.runs.cancel(queued.id, eval_id=evaluation.id)
    assert client.evals.runs.delete(run.id, eval_id=evaluation.id).deleted
    assert [r.id for r in client.evals.runs.list(evaluation.id)] == [queued.id]
    missing = {**source, "model": "ft:lmtune-tiny:ftjob-0123"}
    with pytest.raises(openai.NotFoundError, match="no fine-tuned model"):
        client.evals.runs.create(evaluation.id, data_source=missing)
    wrong = {**source, "source": {"type": "file_content", "content": [{"item": {"question": "q"}}]}}
    with pytest.raises(openai.BadRequestError, match="'answer' is a required property"):
        client.evals.runs.create(evaluation.id, data_source=wrong)


def test_a_run_reads_an_uploaded_evals_file(api):
    client = sdk(api, api.alice)
    import json

    content = "".join(json.dumps(row) + "\n" for row in ROWS).encode()
    uploaded = client.files.create(file=("items.jsonl", content), purpose="evals")
    assert uploaded.purpose == "evals"
    evaluation = make_eval(client)
    run = client.evals.runs.create(
        evaluation.id, data_source={"type": "jsonl", "source": {"type": "file_id", "id": uploaded.id}}
    )
    work(api)
    assert client.evals.runs.retrieve(run.id, eval_id=evaluation.id).result_counts.passed == 1
    with pytest.raises(openai.BadRequestError, match="not a valid evals file"):
        client.files.create(file=("bad.jsonl", b"[1, 2]\n"), purpose="evals")
    with pytest.raises(openai.BadRequestError, match="line 2: not UTF-8 text"):
        client.files.create(file=("binary.jsonl", b'{"item": {}}\n\x89PNG\n'), purpose="evals")
