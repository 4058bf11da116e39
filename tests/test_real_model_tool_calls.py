"""A real pretrained model (SmolLM2-135M-Instruct, whose chat template knows no tools, so the rows
are written in the fallback format) is fine-tuned through the whole service on OpenAI tool-calling
rows, then called through the unmodified openai SDK with `tools`: for cities it never saw, it calls
the right function with the right arguments, answered whole and streamed."""

import json

import pytest

from cli.sample_data import HELD_OUT_CITIES, TIME_QUESTIONS, TOOLS, WEATHER_QUESTIONS, tool_examples
from tests.deployment import finished_job
from tests.service.conftest import jsonl

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


def held_out() -> list[tuple[str, str, str]]:
    """(question, function, city) for the cities the training rows never name, the functions in turn."""
    asked = []
    for i, city in enumerate(HELD_OUT_CITIES):
        function, questions = ("get_weather", WEATHER_QUESTIONS) if i % 2 else ("get_local_time", TIME_QUESTIONS)
        asked.append((questions[i // 2 % len(questions)].format(city), function, city))
    return asked


def test_a_lora_fine_tune_on_tool_rows_makes_smollm2_call_functions_through_the_sdk(smollm2_service):
    client, deployment = smollm2_service
    training = client.files.create(file=("tools.jsonl", jsonl(tool_examples(48, seed=1))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=training.id,
        seed=0,
        hyperparameters={"n_epochs": 1, "batch_size": 4},
        extra_body={
            "training": {
                "learning_rate": 2e-3,
                "lora": {"r": 16},
                "lr_scheduler": "constant",
                "checkpoint_every_steps": 10,
                "sample_prompts": [],
                "max_seq_length": 384,
            }
        },
    )
    done = finished_job(client, job.id, deployment)
    assert done.status == "succeeded", done.error

    for question, function, city in held_out():
        completion = client.chat.completions.create(
            model=done.fine_tuned_model,
            messages=[{"role": "user", "content": question}],
            tools=TOOLS,
            parallel_tool_calls=False,
            temperature=0,
            max_tokens=40,
        )
        [choice] = completion.choices
        assert choice.finish_reason == "tool_calls", (question, choice.message.content)
        [call] = choice.message.tool_calls
        assert call.id.startswith("call_") and call.type == "function"
        assert (call.function.name, json.loads(call.function.arguments)) == (function, {"city": city}), question

    question, function, city = held_out()[0]
    with client.chat.completions.stream(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": question}],
        tools=TOOLS,
        temperature=0,
        max_tokens=40,
    ) as stream:
        streamed = stream.get_final_completion().choices[0]
    assert streamed.finish_reason == "tool_calls"
    [call] = streamed.message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == (function, {"city": city})
