"""Model graders in the trainer: a judge model (here a tiny one whose every answer is "7") is loaded
by the trainer and its grade is the reward of reinforcement fine-tuning, the grade of its samples,
and an eval's score at each evaluation (training.eval_id); a judge that cannot load fails the job
naming the grader."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers import metric_rows
from tests.workers.training.test_grpo_training import spec
from workers.models.errors import ModelLoadError
from workers.training.loop import train


@pytest.fixture(scope="module")
def judge_of_sevens(tiny_model, tmp_path_factory):
    """The tiny model made to answer "7" to any prompt: no layer adds to the residual stream, so each
    next token follows from the current one alone; after any token but "7" comes "7", after "7" the
    end of the turn."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    seven, end = tokenizer.convert_tokens_to_ids(["7", "<|im_end|>"])
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings, head = model.model.embed_tokens.weight, model.lm_head.weight
        embeddings.zero_()
        embeddings[:, 0] = 1.0
        embeddings[seven] = 0.0
        embeddings[seven, 1] = 1.0
        head.zero_()
        head[seven, 0] = 10.0
        head[end, 1] = 10.0
    folder = tmp_path_factory.mktemp("judge") / "sevens"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def score(judge: str, name: str = "judge") -> dict:
    return {
        "type": "score_model",
        "name": name,
        "model": judge,
        "input": [{"role": "user", "content": "Rate this answer from 0 to 10: {{sample.output_text}}"}],
        "range": [0, 10],
    }


def test_the_judge_s_grade_is_the_reward_and_the_samples_grade(tiny_model, judge_of_sevens, tmp_path):
    label = {
        "type": "label_model",
        "name": "says",
        "model": judge_of_sevens,
        "input": [{"role": "user", "content": "Is {{sample.output_text}} about {{item.topic}}? 3 or 7"}],
        "labels": ["3", "7"],
        "passing_labels": ["7"],
    }
    grader = {
        "type": "multi",
        "name": "judged",
        "graders": {"judge": score(judge_of_sevens), "says": label},
        "calculate_output": "judge + says",
    }
    job = spec(tiny_model, tmp_path, grader=grader, steps=2, sample_max_tokens=8)
    job = job.model_copy(update={"training": job.training.model_copy(update={"sample_prompts": None})})
    train(job, tmp_path / "run")
    for row in metric_rows(tmp_path / "run"):
        assert row["train_reward_judge_mean"] == 7.0 and row["train_reward_says_mean"] == 1.0
        assert row["train_reward_mean"] == 8.0 and row["train_grading_errors"] == 0
    assert [row["valid_reward_mean"] for row in metric_rows(tmp_path / "run") if "valid_reward_mean" in row] == [8.0]
    samples = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[-1])["samples"]
    assert [(s["reward"], s["grades"]) for s in samples] == [(8.0, {"judge": 7.0, "says": 1.0})] * 3


def test_an_eval_s_model_grader_scores_each_evaluation(make_spec, chat_file, valid_file, judge_of_sevens, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    criterion = {**score(judge_of_sevens, "rated"), "pass_threshold": 8}
    (run / "eval.json").write_text(
        json.dumps({"id": "eval_1", "name": "rated", "item_schema": {}, "testing_criteria": [criterion]})
    )
    train(make_spec(chat_file, valid_file, max_steps=4, eval_every_steps=2, eval_id="eval_1", eval_max_tokens=4), run)
    scored = [(row["valid_eval_rated"], row["valid_eval_pass_rate"]) for row in metric_rows(run) if "valid_loss" in row]
    assert scored == [(7.0, 0.0), (7.0, 0.0)]  # 7 is below the pass threshold of 8


def test_a_judge_that_cannot_load_fails_the_job_naming_the_grader(tiny_model, tmp_path):
    with pytest.raises(ModelLoadError, match="a model grader's judge") as caught:
        train(spec(tiny_model, tmp_path, grader=score(str(tmp_path / "no-such-model"))), tmp_path / "run")
    assert caught.value.param == "method.reinforcement.grader.model"
