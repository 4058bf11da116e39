"""OpenAI's preference rows (DPO) are checked line by line, each problem named as the row spells it."""

import copy
import json

import pytest

from cli.sample_data import TOOLS, preference_examples
from lmtune.training_data import DatasetError, validate_jsonl_lines

PAIR = preference_examples(1)[0]
TOOL_PAIR = {
    "input": {
        "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "tools": TOOLS,
        "parallel_tool_calls": False,
    },
    "preferred_output": [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        }
    ],
    "non_preferred_output": [{"role": "assistant", "content": "I cannot know that."}],
}


def lines_with(bad: dict, at: int = 4, total: int = 12) -> list[str]:
    lines = [json.dumps(PAIR)] * total
    lines[at - 1] = json.dumps(bad)
    return lines


def changed(row: dict, change) -> dict:
    row = copy.deepcopy(row)
    change(row)
    return row


def test_preference_rows_with_text_and_tool_calls_are_accepted():
    rows = validate_jsonl_lines([json.dumps(PAIR)] * 6 + [json.dumps(TOOL_PAIR)] * 6)
    assert {row.shape for row in rows} == {"preference"}
    assert len(rows) == 12


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            changed(PAIR, lambda r: r.pop("non_preferred_output")),
            "line 4: a preference row needs ['non_preferred_output'] too",
        ),
        (changed(PAIR, lambda r: r.update(extra=1)), "line 4: unknown keys ['extra'] in a preference row"),
        (changed(PAIR, lambda r: r.update(input=[])), 'line 4: input: must be an object with "messages"'),
        (changed(PAIR, lambda r: r["input"].update(functions=[])), "line 4: input: unknown keys ['functions']"),
        (
            changed(PAIR, lambda r: r["input"]["messages"].append({"role": "assistant", "content": "x"})),
            "line 4: input.messages[2]: the input ends with an assistant message",
        ),
        (
            changed(PAIR, lambda r: r["input"]["messages"][1].update(role="robot")),
            "line 4: input.messages[1]: unknown role 'robot'",
        ),
        (
            changed(PAIR, lambda r: r.update(preferred_output=r["preferred_output"] * 2)),
            "line 4: preferred_output: must be a list of one assistant message",
        ),
        (
            changed(PAIR, lambda r: r["non_preferred_output"][0].update(role="user")),
            "line 4: non_preferred_output[0]: must be an assistant message",
        ),
        (
            changed(PAIR, lambda r: r["preferred_output"][0].update(weight=1)),
            "line 4: preferred_output[0].weight: weight is for chat rows",
        ),
        (
            changed(PAIR, lambda r: r["preferred_output"][0].pop("content")),
            "line 4: preferred_output[0]: missing content",
        ),
        (
            changed(TOOL_PAIR, lambda r: r["preferred_output"][0]["tool_calls"][0]["function"].update(arguments="{")),
            "line 4: preferred_output[0].tool_calls[0].function.arguments: not valid JSON",
        ),
        (
            changed(TOOL_PAIR, lambda r: r["preferred_output"][0]["tool_calls"][0]["function"].update(name="nope")),
            "line 4: preferred_output[0].tool_calls[0].function.name: calls 'nope'",
        ),
        (changed(TOOL_PAIR, lambda r: r["input"].update(tools=[{"type": "x"}])), "line 4: input.tools[0].type"),
    ],
)
def test_each_problem_names_its_line_and_field(bad, message):
    with pytest.raises(DatasetError) as caught:
        validate_jsonl_lines(lines_with(bad))
    assert len(caught.value.errors) == 1
    assert caught.value.errors[0].startswith(message), caught.value.errors[0]


def test_a_file_holds_the_rows_of_one_method():
    chat = {"messages": PAIR["input"]["messages"] + PAIR["preferred_output"]}
    lines = [json.dumps(PAIR)] * 11 + [json.dumps(chat)]
    with pytest.raises(DatasetError) as caught:
        validate_jsonl_lines(lines)
    assert caught.value.errors == [
        "line 12: a chat row, which trains with method 'supervised', but line 1 is a preference row "
        "(method 'dpo'); a file holds the rows of one method"
    ]
