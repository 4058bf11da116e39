"""OpenAI's method object through the API: as the SDK sends it, echoed on the job, and a training
file whose rows another method trains on refused naming the line and the method to use."""

from cli.sample_data import preference_examples
from tests.service.conftest import GOOD_FILE, jsonl
from tests.service.test_api_errors import error_of

PAIRS = jsonl(preference_examples(12, seed=1))


def create(api, file_id: str, **body):
    return api.client.post(
        "/v1/fine_tuning/jobs", headers=api.alice, json={"model": "lmtune-tiny", "training_file": file_id, **body}
    )


def test_a_dpo_job_on_preference_rows_is_queued_and_shows_its_method(api):
    uploaded = api.upload(api.alice, PAIRS).json()
    assert uploaded["examples"] == 12
    method = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}}
    job = create(api, uploaded["id"], method=method)
    assert job.status_code == 200, job.text
    shown = {"beta": 0.2, "n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto"}
    assert job.json()["method"] == {"type": "dpo", "dpo": {"hyperparameters": shown}}
    again = api.client.get(f"/v1/fine_tuning/jobs/{job.json()['id']}", headers=api.alice).json()
    assert again["method"]["dpo"]["hyperparameters"] == shown and again["hyperparameters"] == shown


def test_deprecated_hyperparameters_are_a_supervised_method(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    job = create(api, file_id, hyperparameters={"n_epochs": 4}).json()
    assert job["method"]["type"] == "supervised"
    assert job["method"]["supervised"]["hyperparameters"]["n_epochs"] == 4 == job["hyperparameters"]["n_epochs"]


def test_rows_of_another_method_are_refused_naming_the_line_and_the_method(api):
    pairs = api.upload(api.alice, PAIRS).json()["id"]
    chat = api.upload(api.alice, b"\n" + GOOD_FILE).json()["id"]  # its first row is on line 2
    body = error_of(create(api, pairs), 400)
    assert body["param"] == "training_file"
    assert f"line 1 of {pairs} is a preference row, which trains with method 'dpo'" in body["message"]
    assert 'Use method {"type": "dpo"}' in body["message"]
    body = error_of(create(api, pairs, method={"type": "dpo"}, validation_file=chat), 400)
    assert body["param"] == "validation_file"
    assert f"line 2 of {chat} is a chat row, which trains with method 'supervised'" in body["message"]
    assert api.queue.sent == []


def test_a_file_mixing_methods_is_refused_at_upload(api):
    mixed = PAIRS + GOOD_FILE
    body = error_of(api.upload(api.alice, mixed), 400)
    assert (
        "line 13: a chat row, which trains with method 'supervised', but line 1 is a preference row" in body["message"]
    )


def test_both_forms_of_hyperparameters_must_agree(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}}
    body = error_of(create(api, file_id, method=method, hyperparameters={"n_epochs": 2}), 400)
    assert "give them once, in method.supervised.hyperparameters" in body["message"]
    same = create(api, file_id, method=method, hyperparameters={"n_epochs": 3})
    assert same.status_code == 200 and same.json()["hyperparameters"]["n_epochs"] == 3


def test_a_file_stored_before_row_shapes_were_kept_holds_supervised_rows(api):
    from lmtune.store.models import File

    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    with api.client.app.state.db.session() as session:
        session.get(File, file_id).row_shapes = None  # as migration 0009 leaves earlier files
    body = error_of(create(api, file_id, method={"type": "dpo"}), 400)
    assert (
        f"{file_id} holds chat, prompt/completion or text rows, which train with method 'supervised'" in body["message"]
    )
    assert create(api, file_id).status_code == 200


GRADER = {
    "type": "string_check",
    "name": "exact",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}",
    "operation": "eq",
}


def prompts(field: str = "answer") -> bytes:
    return jsonl(
        [{"messages": [{"role": "user", "content": f"What is {n} + 1?"}], field: str(n + 1)} for n in range(10)]
    )


def test_a_reinforcement_job_as_the_sdk_sends_it_is_queued_and_shows_its_grader(api):
    file_id = api.upload(api.alice, prompts()).json()["id"]
    method = {"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": {"eval_interval": 2}}}
    job = create(api, file_id, validation_file=file_id, method=method)
    assert job.status_code == 200, job.text
    shown = job.json()["method"]
    assert shown["type"] == "reinforcement" and shown["reinforcement"]["grader"]["reference"] == "{{ item.answer }}"
    assert shown["reinforcement"]["hyperparameters"]["eval_interval"] == 2
    assert len(api.queue.sent) == 1


def test_rows_without_a_field_the_grader_reads_are_refused_at_create_naming_the_line(api):
    good = api.upload(api.alice, prompts()).json()["id"]
    missing = api.upload(api.alice, prompts(field="solution")).json()["id"]
    method = {"type": "reinforcement", "reinforcement": {"grader": GRADER}}
    body = error_of(create(api, missing, validation_file=good, method=method), 400)
    assert body["param"] == "training_file"
    assert "line 1: the grader reads {{item.answer}}" in body["message"]
    body = error_of(create(api, good, method=method), 400)  # OpenAI requires a validation file
    assert "validation_file" in body["message"]
    assert api.queue.sent == []


def test_a_model_grader_s_judge_must_be_a_model_of_this_key_on_this_machine(api, tmp_path, monkeypatch):
    catalogue = tmp_path / "models.yaml"
    catalogue.write_text(
        "models:\n  lmtune-tiny:\n    builtin: tiny\n  far-away:\n    source: lmtune-tests/not-in-any-cache\n"
    )
    monkeypatch.setenv("LMTUNE_MODELS_FILE", str(catalogue))  # the tests run with HF_HUB_OFFLINE=1
    file_id = api.upload(api.alice, prompts()).json()["id"]

    def with_judge(model: str) -> dict:
        judge = {
            "type": "score_model",
            "name": "judge",
            "model": model,
            "input": [{"role": "user", "content": "Is {{sample.output_text}} {{item.answer}}?"}],
        }
        grader = {
            "type": "multi",
            "name": "m",
            "graders": {"exact": GRADER, "judge": judge},
            "calculate_output": "exact + judge",
        }
        return {"type": "reinforcement", "reinforcement": {"grader": grader}}

    body = error_of(
        create(api, file_id, validation_file=file_id, method=with_judge("ft:lmtune-tiny:bob:x:ftjob-1")), 404
    )
    assert body["code"] == "model_not_found" and body["param"] == "method.reinforcement.grader.graders.judge.model"
    assert "the grader's judge: no fine-tuned model" in body["message"]
    body = error_of(create(api, file_id, validation_file=file_id, method=with_judge("far-away")), 503)
    assert body["code"] == "model_not_available" and body["param"] == "method.reinforcement.grader.graders.judge.model"
    assert "hf download lmtune-tests/not-in-any-cache" in body["message"]
    assert api.queue.sent == []
    judged = create(api, file_id, validation_file=file_id, method=with_judge("lmtune-tiny"))
    assert judged.status_code == 200, judged.text
    assert judged.json()["method"]["reinforcement"]["grader"]["graders"]["judge"]["model"] == "lmtune-tiny"
