"""Through the Evals API, a fine-tuned SmolLM2-135M-Instruct scores above its base: the base never
says the codeword, the LoRA fine-tune (tests/test_real_model_fine_tune.py's) says it on held-out
questions, and the eval's string_check counts it."""

import pytest

from tests.deployment import finished_job
from tests.service.conftest import jsonl
from tests.test_real_model_fine_tune import CODEWORD, HELD_OUT, questions
from tests.waiting import wait_while_progressing, working

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
    pytest.mark.filterwarnings("ignore:The Evals API is deprecated:DeprecationWarning"),
]
TESTS = [row["messages"][0]["content"] for row in questions(7, 8)]


def test_a_fine_tuned_smollm2_scores_above_its_base(smollm2_service):
    client, deployment = smollm2_service
    training = client.files.create(file=("train.jsonl", jsonl(questions(1, 48))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=training.id,
        seed=0,
        hyperparameters={"n_epochs": 1, "batch_size": 4},
        extra_body={
            "training": {
                "learning_rate": 2e-3,
                "lora": {"r": 8},
                "max_steps": 4,
                "lr_scheduler": "constant",
                "checkpoint_every_steps": 4,
                "sample_prompts": [HELD_OUT],
                "sample_max_tokens": 8,
                "max_seq_length": 96,
            }
        },
    )
    job = finished_job(client, job.id, deployment)
    assert job.status == "succeeded", job.error
    evaluation = client.evals.create(
        name="codeword",
        data_source_config={
            "type": "custom",
            "item_schema": {"type": "object", "properties": {"question": {"type": "string"}}},
        },
        testing_criteria=[
            {
                "type": "string_check",
                "name": "says it",
                "input": "{{sample.output_text}}",
                "reference": CODEWORD,
                "operation": "like",
            }
        ],
    )
    source = {
        "type": "completions",
        "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]},
        "sampling_params": {"max_completion_tokens": 8, "temperature": 0},
        "source": {"type": "file_content", "content": [{"item": {"question": q}} for q in TESTS]},
    }
    runs = [
        client.evals.runs.create(evaluation.id, data_source={**source, "model": model})
        for model in ("smollm2-135m-instruct", job.fine_tuned_model)
    ]
    base, tuned = wait_while_progressing(
        lambda: [client.evals.runs.retrieve(r.id, eval_id=evaluation.id) for r in runs],
        lambda found: all(r.status in ("completed", "failed") for r in found),
        progress=lambda found: (
            [(r.status, r.result_counts.total) for r in found],
            working(*(process.pid for process in deployment.processes)),
        ),
        what="both runs to end",
        diagnose=deployment.logs,
    )
    assert base.status == tuned.status == "completed"
    assert base.result_counts.passed == 0
    assert tuned.result_counts.passed >= len(TESTS) // 2 > base.result_counts.passed
