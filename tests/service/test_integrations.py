"""`integrations` on job create: OpenAI's W&B shape and lmtune's trackers accepted and echoed as
OpenAI echoes them; anything else (or a credential) refused naming the field."""

import openai

from tests.service.conftest import GOOD_FILE
from tests.service.test_webhooks import sdk


def test_integrations_are_kept_and_echoed_through_the_sdk(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    wandb = {"type": "wandb", "wandb": {"project": "p", "name": "run", "entity": "team", "tags": ["a"]}}
    job = sdk(api, api.alice).fine_tuning.jobs.create(
        model="lmtune-tiny",
        training_file=file_id,
        integrations=[wandb, {"type": "tensorboard"}, {"type": "mlflow", "mlflow": {"experiment": "e"}}],
    )
    assert job.integrations[0].type == "wandb" and job.integrations[0].wandb.project == "p"
    assert job.integrations[0].wandb.tags == ["a"] and job.integrations[0].wandb.entity == "team"
    fetched = api.client.get(f"/v1/fine_tuning/jobs/{job.id}", headers=api.alice).json()
    assert [i["type"] for i in fetched["integrations"]] == ["wandb", "tensorboard", "mlflow"]


def test_unknown_trackers_and_credentials_are_refused(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    client = sdk(api, api.alice)
    for integrations, where in (
        ([{"type": "comet", "comet": {}}], "integrations.0"),
        ([{"type": "wandb", "wandb": {"project": "p", "api_key": "secret"}}], "integrations.0.wandb.api_key"),
        ([{"type": "wandb", "wandb": {"project": "p", "tags": ["x" * 65]}}], "integrations.0.wandb.tags.0"),
        ([{"type": "tensorboard"}, {"type": "tensorboard"}], "integrations"),
    ):
        try:
            client.fine_tuning.jobs.create(model="lmtune-tiny", training_file=file_id, integrations=integrations)
        except openai.BadRequestError as refused:
            assert where in refused.message, refused.message
        else:
            raise AssertionError(f"{integrations} was accepted")
