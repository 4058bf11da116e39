"""The Evals API end to end through the unmodified `openai` SDK, against a live `lmtune serve` and a
real worker process on Redis and PostgreSQL: a job trains, an eval runs on its final model and, in one
call, on every checkpoint it keeps; the job's eval runs carry the steps the job page plots. A run of
hundreds of items is sampled on the worker: another key's chat completion answers meanwhile."""

import openai
import pytest

from cli.sample_data import chat_examples
from tests.service.conftest import jsonl
from tests.service.test_api_sdk import waiter
from tests.service.test_evals_api import EXACT, FUZZY, ITEM_SCHEMA
from tests.waiting import wait_while_progressing, working

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
    pytest.mark.filterwarnings("ignore:The Evals API is deprecated:DeprecationWarning"),
]
SOURCE = {
    "type": "completions",
    "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]},
    "sampling_params": {"max_completion_tokens": 6, "temperature": 0},
}


def items(count: int) -> list[dict]:
    return [{"item": {"question": f"Question {i}?", "answer": "ANSWER"}} for i in range(count)]


def wait_runs(deployment, client, eval_id: str, run_ids: list[str]) -> list:
    pids = [process.pid for process in deployment.processes]

    def runs():
        return [client.evals.runs.retrieve(run_id, eval_id=eval_id) for run_id in run_ids]

    return wait_while_progressing(
        runs,
        lambda found: all(run.status in ("completed", "failed", "canceled") for run in found),
        progress=lambda found: ([(r.status, r.result_counts.total) for r in found], working(*pids)),
        what=f"runs {run_ids} to end",
        diagnose=deployment.logs,
    )


def test_the_sdk_drives_evals_on_a_jobs_model_and_checkpoints(deployment):
    deployment.start_model_server()
    base_url = deployment.start_server()
    deployment.start_worker()
    alice = openai.OpenAI(base_url=f"{base_url}/v1", api_key=deployment.create_key("alice"), max_retries=0)
    bob = openai.OpenAI(base_url=f"{base_url}/v1", api_key=deployment.create_key("bob"), max_retries=0)
    training = alice.files.create(file=("t.jsonl", jsonl(chat_examples(24, seed=5, spread=0.5))), purpose="fine-tune")
    job = alice.fine_tuning.jobs.create(
        model="lmtune-tiny",
        training_file=training.id,
        hyperparameters={"n_epochs": 2, "batch_size": 4},
        extra_body={"training": {"learning_rate": 3e-3, "checkpoint_every_steps": 4, "sample_prompts": []}},
    )
    job = waiter(deployment)(alice, job.id, ("succeeded", "failed"))
    assert job.status == "succeeded", job.error

    judge = {
        "type": "score_model",
        "name": "judge",
        "model": job.fine_tuned_model,  # the key's own fine-tuned model judges, on the worker
        "input": [{"role": "user", "content": "Score {{sample.output_text}} against {{item.answer}}"}],
        "sampling_params": {"max_completions_tokens": 4},
    }
    evaluation = alice.evals.create(
        name="answers",
        data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA},
        testing_criteria=[EXACT, FUZZY, judge],
    )
    source = {**SOURCE, "model": job.fine_tuned_model, "source": {"type": "file_content", "content": items(4)}}
    run = alice.evals.runs.create(evaluation.id, data_source=source)
    with pytest.raises(openai.NotFoundError):  # another key sees neither the eval nor its run
        bob.evals.runs.retrieve(run.id, eval_id=evaluation.id)
    (run,) = wait_runs(deployment, alice, evaluation.id, [run.id])
    assert run.status == "completed" and run.result_counts.total == 4
    assert run.per_model_usage[0].run_model_name == job.fine_tuned_model
    # the sampled model and the judge (the same model here) are both counted: 4 samples, 4 judgements
    assert run.per_model_usage[0].invocation_count == 8
    outputs = list(alice.evals.runs.output_items.list(run.id, eval_id=evaluation.id))
    assert len(outputs) == 4 and all(o.sample.output[0].content is not None for o in outputs)

    # one call: every kept checkpoint and the final model
    created = alice.post(
        f"/fine_tuning/jobs/{job.id}/evals",
        body={
            "eval_id": evaluation.id,
            "data_source": {**SOURCE, "source": {"type": "file_content", "content": items(3)}},
        },
        cast_to=object,
    )["data"]
    checkpoints = sorted(c.step_number for c in alice.fine_tuning.jobs.checkpoints.list(job.id))
    assert [r["step"] for r in created] == sorted(set(checkpoints) | {job.model_extra["progress"]["step"]})
    assert created[-1]["model"] == job.fine_tuned_model
    wait_runs(deployment, alice, evaluation.id, [r["id"] for r in created])
    scores = alice.get(f"/fine_tuning/jobs/{job.id}/evals", cast_to=object)["data"]
    assert {r["id"] for r in created} <= {r["id"] for r in scores}
    assert all(
        r["status"] == "completed" and r["per_testing_criteria_scores"][1]["mean_score"] is not None for r in scores
    )
    assert all(r["report_url"].endswith(f"#/jobs/{job.id}") for r in scores)


def test_a_long_run_does_not_hold_up_another_keys_completions(deployment):
    deployment.start_model_server()
    base_url = deployment.start_server()
    deployment.start_worker()
    alice = openai.OpenAI(base_url=f"{base_url}/v1", api_key=deployment.create_key("alice"), max_retries=0)
    bob = openai.OpenAI(base_url=f"{base_url}/v1", api_key=deployment.create_key("bob"), max_retries=0)
    ask = {"model": "lmtune-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    bob.chat.completions.create(**ask)  # the model server has the model loaded
    # graders/run's judge answers through the model server, with the tokens it used
    judged = bob.fine_tuning.alpha.graders.run(
        grader={
            "type": "score_model",
            "name": "j",
            "model": "lmtune-tiny",
            "input": [{"role": "user", "content": "Rate {{sample.output_text}}"}],
            "sampling_params": {"max_completions_tokens": 3},
        },
        model_sample="hello",
    )
    usage = judged.model_grader_token_usage_per_model["lmtune-tiny"]
    assert 0 < usage["completion_tokens"] <= 3 and usage["prompt_tokens"] > 0
    assert 0 <= judged.reward <= 1 and judged.metadata.errors.model_grader_server_error is False
    evaluation = alice.evals.create(
        data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA}, testing_criteria=[EXACT]
    )
    source = {**SOURCE, "model": "lmtune-tiny", "source": {"type": "file_content", "content": items(400)}}
    source["sampling_params"] = {"max_completion_tokens": 24, "temperature": 0}
    run = alice.evals.runs.create(evaluation.id, data_source=source)
    pids = [process.pid for process in deployment.processes]
    started = wait_while_progressing(
        lambda: alice.evals.runs.retrieve(run.id, eval_id=evaluation.id),
        lambda r: r.status != "queued" and r.result_counts.total > 0,
        progress=lambda r: (r.status, working(*pids)),
        what="the run to grade its first batch",
        diagnose=deployment.logs,
    )
    assert started.status == "in_progress"
    answered = bob.chat.completions.create(**ask)
    during = alice.evals.runs.retrieve(run.id, eval_id=evaluation.id)
    assert answered.choices[0].finish_reason in ("stop", "length")
    assert during.status == "in_progress" and during.result_counts.total < 400
    alice.evals.runs.cancel(run.id, eval_id=evaluation.id)
    (ended,) = wait_runs(deployment, alice, evaluation.id, [run.id])
    assert ended.status == "canceled" and ended.result_counts.total < 400
