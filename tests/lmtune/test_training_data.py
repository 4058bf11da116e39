import json

import pytest

from lmtune.training_data import DatasetError, validate_jsonl_lines

GOOD_CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def lines_with(bad_line: str, at: int = 7, total: int = 12) -> list[str]:
    lines = [json.dumps(GOOD_CHAT)] * total
    lines[at - 1] = bad_line
    return lines


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"messages": [', "line 7: invalid JSON"),
        ('{"question": "x", "answer": "y"}', "line 7: unknown row shape with keys ['answer', 'question']"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "line 7: messages[0]: unknown role 'robot'"),
        ('{"messages": [{"role": "user"}]}', "line 7: messages[0]: missing content"),
        (
            '{"messages": [{"role": "user", "content": "x"}]}',
            "line 7: at least one message with the assistant role is required",
        ),
        ('{"messages": [{"role": "assistant", "content": "x", "weight": 2}]}', "line 7: messages[0]: bad weight 2"),
        (
            '{"messages": [{"role": "user", "content": "x", "weight": 1}, {"role": "assistant", "content": "y"}]}',
            "line 7: messages[0]: weight is only allowed on assistant",
        ),
        ('{"prompt": "x", "completion": ""}', 'line 7: "completion" must be a non-empty string'),
        ("[1, 2]", "line 7: expected a JSON object, got list"),
    ],
)
def test_each_problem_is_reported_with_its_line(bad, message):
    with pytest.raises(DatasetError) as caught:
        validate_jsonl_lines(lines_with(bad))
    assert caught.value.errors == [caught.value.errors[0]]
    assert caught.value.errors[0].startswith(message)


def test_every_bad_line_is_listed_in_one_pass():
    lines = lines_with("{oops", at=3)
    lines[9] = '{"text": 5}'
    with pytest.raises(DatasetError) as caught:
        validate_jsonl_lines(lines)
    assert [error.split(":")[0] for error in caught.value.errors] == ["line 3", "line 10"]


def test_empty_file_is_refused():
    with pytest.raises(DatasetError, match="the file is empty"):
        validate_jsonl_lines(["", "\n"])


def test_too_few_examples_are_refused():
    with pytest.raises(DatasetError, match="the file has 3 examples; at least 10 are required"):
        validate_jsonl_lines([json.dumps(GOOD_CHAT)] * 3)


def test_all_three_shapes_are_accepted():
    lines = [json.dumps(GOOD_CHAT), '{"prompt": "a", "completion": "b"}', '{"text": "c"}'] * 4
    rows = validate_jsonl_lines(lines)
    assert [row.shape for row in rows[:3]] == ["chat", "prompt_completion", "text"]
    assert rows[1].line == 2


def test_a_line_past_the_length_limit_is_skipped_unread_and_named(tmp_path, monkeypatch):
    import lmtune.training_data as training_data

    monkeypatch.setattr(training_data, "MAX_LINE_BYTES", 100)
    path = tmp_path / "train.jsonl"
    lines = [json.dumps({"text": "ok"})] * 12
    lines[1] = json.dumps({"text": "x" * 1000})
    lines[4] = "{bad"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as caught:
        training_data.scan_file(path)
    assert caught.value.errors == [
        "line 2: the line is longer than 100 bytes",
        "line 5: invalid JSON (Expecting property name enclosed in double quotes at column 2)",
    ]


def test_only_the_first_problems_are_kept_with_the_total():
    with pytest.raises(DatasetError) as caught:
        validate_jsonl_lines(["[]"] * 10_000)
    assert len(caught.value.errors) == 5 and caught.value.total == 10_000
    assert str(caught.value).endswith("… and 9,995 more problems")
