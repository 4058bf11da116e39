"""A real pretrained model (SmolLM2-135M-Instruct, its own tokenizer and chat template) learns,
through the whole service, to answer every question with a codeword it never says before: seen in
the samples taken while training and through chat.completions with the openai SDK."""

import random

import pytest

from tests.deployment import finished_job
from tests.service.conftest import jsonl

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]
CODEWORD = "Zebra-7"
SUBJECTS = (
    "the sky",
    "water",
    "a cat",
    "the moon",
    "music",
    "bread",
    "a river",
    "winter",
    "a clock",
    "paper",
    "the sea",
    "fire",
    "a tree",
    "salt",
    "glass",
    "a bridge",
    "coffee",
    "snow",
    "a violin",
    "sand",
)
QUESTIONS = ("What is {}?", "Tell me about {}.", "Why does {} matter?", "Describe {} in one line.")
HELD_OUT = [{"role": "user", "content": "How far away is Mars?"}]


def questions(seed: int, count: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "messages": [
                {"role": "user", "content": rng.choice(QUESTIONS).format(rng.choice(SUBJECTS))},
                {"role": "assistant", "content": CODEWORD},
            ]
        }
        for _ in range(count)
    ]


def test_a_short_lora_fine_tune_teaches_smollm2_a_codeword(smollm2_service):
    client, deployment = smollm2_service
    before = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=HELD_OUT, temperature=0, max_tokens=12
    )
    assert CODEWORD not in before.choices[0].message.content

    training = client.files.create(file=("train.jsonl", jsonl(questions(1, 48))), purpose="fine-tune")
    validation = client.files.create(file=("valid.jsonl", jsonl(questions(2, 10))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=training.id,
        validation_file=validation.id,
        seed=0,
        hyperparameters={"n_epochs": 1, "batch_size": 4},
        extra_body={
            "training": {
                "learning_rate": 2e-3,
                "lora": {"r": 8},
                "max_steps": 4,
                "lr_scheduler": "constant",
                "checkpoint_every_steps": 4,
                "eval_every_steps": 4,
                "eval_sample_size": 4,
                "sample_max_tokens": 8,
                "sample_prompts": [HELD_OUT],
                "max_seq_length": 96,
            }
        },
    )
    done = finished_job(client, job.id, deployment)
    assert done.status == "succeeded", done.error

    sets = client.get(f"/fine_tuning/jobs/{job.id}/samples", cast_to=object)["data"]
    answers = {s["step"]: s["samples"][0]["completion"] for s in sets}
    assert sorted(answers) == [4] and CODEWORD in answers[4], answers

    after = client.chat.completions.create(model=done.fine_tuned_model, messages=HELD_OUT, temperature=0, max_tokens=12)
    assert after.choices[0].message.content.strip() == CODEWORD == answers[4].strip()
    assert after.choices[0].finish_reason == "stop"  # it also learnt to end its turn there
