"""POST /v1/fine_tuning/jobs with training.eval_id: the eval must be the key's, scorable by a trainer,
name the scores that early_stopping/keep_best follow, and fit the validation rows as items."""

from tests.helpers import EXACT
from tests.service.conftest import GOOD_FILE, jsonl

ANSWERS = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def make_eval(api, headers, item_schema=ANSWERS, criteria=(EXACT,)) -> str:
    response = api.client.post(
        "/v1/evals",
        headers=headers,
        json={
            "name": "answers",
            "data_source_config": {"type": "custom", "item_schema": item_schema},
            "testing_criteria": list(criteria),
        },
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def submit(api, eval_id, validation=GOOD_FILE, **training):
    train = api.upload(api.alice, GOOD_FILE).json()["id"]
    valid = api.upload(api.alice, validation, "valid.jsonl").json()["id"]
    return api.client.post(
        "/v1/fine_tuning/jobs",
        headers=api.alice,
        json={
            "model": "lmtune-tiny",
            "training_file": train,
            "validation_file": valid,
            "training": {"eval_id": eval_id, **training},
        },
    )


def test_a_job_names_its_key_s_eval_and_a_score_to_keep_the_best_by(api):
    eval_id = make_eval(api, api.alice)
    response = submit(
        api, eval_id, keep_best={"metric": "valid_eval_exact"}, early_stopping={"metric": "valid_eval_pass_rate"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] in api.queue.sent


def test_an_unknown_or_another_key_s_eval_is_404(api):
    for eval_id in ("eval_nope", make_eval(api, api.bob)):
        response = submit(api, eval_id)
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "eval_not_found" and error["param"] == "training.eval_id"
    assert not api.queue.sent


def test_a_score_the_eval_does_not_give_is_refused_naming_those_it_gives(api):
    response = submit(api, make_eval(api, api.alice), keep_best={"metric": "valid_eval_close"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "training.keep_best.metric"
    assert "gives no metric valid_eval_close; it gives valid_eval_exact, valid_eval_pass_rate" in error["message"]


def test_validation_rows_that_do_not_fit_the_item_schema_are_refused_naming_the_line(api):
    schema = {"type": "object", "required": ["answer", "country"]}
    response = submit(api, make_eval(api, api.alice, item_schema=schema))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "validation_file" and error["code"] == "invalid_file"
    assert "line 1: as an eval item, item: 'country' is a required property" in error["message"]
    text_rows = jsonl([{"text": f"plain {i}"} for i in range(12)])
    response = submit(api, make_eval(api, api.alice), validation=text_rows)
    assert response.status_code == 400 and "a text row has no prompt" in response.json()["error"]["message"]


def test_an_eval_with_a_model_grader_is_taken_while_its_judge_is_a_model_of_this_server(api, tmp_path, monkeypatch):
    judge = {
        "type": "score_model",
        "name": "judge",
        "model": "lmtune-tiny",
        "input": [{"role": "user", "content": "Rate {{sample.output_text}}"}],
    }
    eval_id = make_eval(api, api.alice, criteria=(judge,))
    response = submit(api, eval_id)
    assert response.status_code == 200, response.text
    catalogue = tmp_path / "models.yaml"  # the judge left the catalogue since the eval was made
    catalogue.write_text("models:\n  lmtune-tiny:\n    builtin: tiny\n  other:\n    builtin: tiny\n")
    monkeypatch.setenv("LMTUNE_MODELS_FILE", str(catalogue))
    eval_id = make_eval(api, api.alice, criteria=({**judge, "model": "other"},))
    catalogue.write_text("models:\n  lmtune-tiny:\n    builtin: tiny\n")
    error = submit(api, eval_id).json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "training.eval_id"
    assert f"the judge of {eval_id}'s criterion 'judge'" in error["message"]
