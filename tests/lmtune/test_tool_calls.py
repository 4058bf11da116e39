"""Tool-calling training rows in OpenAI's shapes: accepted as OpenAI's fine-tuning guide writes them,
and each problem refused naming its line and its field."""

import copy
import json

import pytest

from cli.sample_data import TOOLS
from lmtune.tool_calls import MAX_TOOLS, check_conversation
from lmtune.training_data import DatasetError, validate_jsonl_lines

WEATHER = TOOLS[0]  # get_weather(city)


def call(call_id="call_1", name="get_weather", arguments='{"city": "Paris"}') -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_row() -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You help with the weather."},
            {"role": "user", "content": "Weather in Paris?", "name": "ada"},
            {"role": "assistant", "tool_calls": [call()]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"degrees": 18}'},
            {"role": "assistant", "content": "It is 18 degrees."},
        ],
        "tools": [WEATHER],
        "parallel_tool_calls": True,
    }


def problem_of(row: dict, at: int = 7) -> str:
    """The one error a file with `row` on line `at` gets."""
    lines = [json.dumps(tool_row())] * 12
    lines[at - 1] = json.dumps(row)
    with pytest.raises(DatasetError) as caught:
        validate_jsonl_lines(lines)
    assert len(caught.value.errors) == 1
    return caught.value.errors[0]


def changed(change) -> dict:
    row = copy.deepcopy(tool_row())
    change(row)
    return row


def test_rows_as_openai_writes_them_are_accepted():
    legacy = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"role": "function", "name": "get_weather", "content": "18 degrees"},
            {"role": "assistant", "content": "It is 18 degrees.", "weight": 0},
        ],
        "functions": [WEATHER["function"]],
    }
    parallel = changed(lambda row: row["messages"][2].update(tool_calls=[call("a"), call("b", arguments="{}")]))
    parallel["messages"][3:4] = [
        {"role": "tool", "tool_call_id": "b", "content": ""},  # answered in any order; a result may be empty
        {"role": "tool", "tool_call_id": "a", "content": "18"},
    ]
    weighted = changed(lambda row: row["messages"][2].update(content=None, weight=0))
    unanswered = {"messages": tool_row()["messages"][:3], "tools": [WEATHER]}  # a row may end with the call
    rows = [tool_row(), legacy, parallel, weighted, unanswered] * 2
    assert len(validate_jsonl_lines([json.dumps(row) for row in rows])) == 10


def test_the_legacy_form_becomes_tools_calls_and_tool_messages():
    conversation = check_conversation(
        [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"role": "function", "name": "get_weather", "content": "18 degrees"},
        ],
        functions=[WEATHER["function"]],
    )
    assert conversation.tools == [WEATHER]
    [_, assistant, answer] = conversation.messages
    [made] = assistant["tool_calls"]
    assert made["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert answer == {"role": "tool", "tool_call_id": made["id"], "name": "get_weather", "content": "18 degrees"}


def set_arguments(text):
    return lambda row: row["messages"][2]["tool_calls"][0]["function"].update(arguments=text)


def set_tool(**fields):
    return lambda row: row["tools"][0]["function"].update(fields)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            set_arguments('{"city": Paris}'),
            "line 7: messages[2].tool_calls[0].function.arguments: not valid JSON (Expecting value at column 10)",
        ),
        (set_arguments('["Paris"]'), "line 7: messages[2].tool_calls[0].function.arguments: must encode a JSON object"),
        (
            set_arguments({"city": "Paris"}),
            "line 7: messages[2].tool_calls[0].function.arguments: must be a string holding a JSON object, got an object",
        ),
        (
            set_arguments("[" * 20000 + "]" * 20000),
            "line 7: messages[2].tool_calls[0].function.arguments: not valid JSON: nested too deeply",
        ),
        (
            lambda row: row["messages"][2]["tool_calls"][0]["function"].update(name="get_time"),
            "line 7: messages[2].tool_calls[0].function.name: calls 'get_time', which the row's tools do not list "
            "(they list ['get_weather'])",
        ),
        (
            lambda row: row.pop("tools"),
            "line 7: messages[2].tool_calls[0].function.name: calls 'get_weather', but the row lists no functions",
        ),
        (
            lambda row: row["messages"][3].update(tool_call_id="call_9"),
            "line 7: messages[3].tool_call_id: answers no call: 'call_9' is not the id of a call in the assistant "
            "turn before it (its calls: ['call_1'])",
        ),
        (
            lambda row: row["messages"].insert(4, {"role": "tool", "tool_call_id": "call_1", "content": "again"}),
            "line 7: messages[4].tool_call_id: call 'call_1' is already answered",
        ),
        (
            lambda row: row["messages"].insert(3, {"role": "user", "content": "hm?"}),
            "line 7: messages[4].tool_call_id: call 'call_1' is already answered, or is not a call of the assistant "
            "turn just before",
        ),
        (
            lambda row: row["messages"][2].update(tool_calls=[call("call_1"), call("call_1")]),
            "line 7: messages[2].tool_calls[1].id: the id 'call_1' is already used by an earlier call",
        ),
        (
            lambda row: (
                row.update(parallel_tool_calls=False) or row["messages"][2].update(tool_calls=[call("a"), call("b")])
            ),
            "line 7: messages[2].tool_calls: 2 calls in one turn, but parallel_tool_calls is false",
        ),
        (lambda row: row.update(parallel_tool_calls="no"), "line 7: parallel_tool_calls: must be true or false"),
        (
            set_tool(name="get weather"),
            "line 7: tools[0].function.name: must be 1 to 64 letters, digits, underscores or dashes, got 'get weather'",
        ),
        (
            set_tool(parameters={"type": "string"}),
            """line 7: tools[0].function.parameters.type: the parameters must be a schema of "type": "object", got 'string'""",
        ),
        (
            set_tool(parameters={"type": "object", "properties": {"city": {"type": "town"}}}),
            "line 7: tools[0].function.parameters: not a valid JSON Schema: ",
        ),
        (
            set_tool(parameters={"type": "object", "required": "city"}),
            "line 7: tools[0].function.parameters: not a valid JSON Schema",
        ),
        (
            set_tool(parameters={"type": "object", "properties": {"a": {"items": [[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]}}}),
            "line 7: tools[0].function.parameters: nested more than 16 levels deep",
        ),
        (
            set_tool(description=5),
            "line 7: tools[0].function.description: must be a string of at most 4,096 characters",
        ),
        (
            lambda row: row["tools"][0].update(type="code_interpreter"),
            "line 7: tools[0].type: must be \"function\" (the only kind of tool), got 'code_interpreter'",
        ),
        (
            lambda row: row["tools"].append(WEATHER),
            "line 7: tools[1]: function 'get_weather' is listed twice; names must be unique",
        ),
        (lambda row: row.update(tools=[]), "line 7: tools: must be a non-empty list of functions, or left out"),
        (
            lambda row: row.update(tools=[WEATHER] * (MAX_TOOLS + 1)),
            "line 7: tools: 129 functions; at most 128 are allowed",
        ),
        (
            lambda row: row.update(functions=[WEATHER["function"]]),
            "line 7: functions: list the functions in tools or in the legacy functions, not both",
        ),
        (
            lambda row: row["messages"][2].pop("tool_calls"),
            "line 7: messages[2]: missing content (a non-empty string is required)",
        ),
        (
            lambda row: row["messages"][3].pop("content"),
            "line 7: messages[3]: missing content (a string is required)",
        ),
        (
            lambda row: row["messages"][2].update(tool_calls=[]),
            "line 7: messages[2].tool_calls: must be a non-empty list of calls, or left out",
        ),
        (
            lambda row: row["messages"][2]["tool_calls"][0].update(type="custom"),
            "line 7: messages[2].tool_calls[0].type: must be \"function\", got 'custom'",
        ),
        (
            lambda row: row["messages"][3].update(weight=1),
            "line 7: messages[3]: weight is only allowed on assistant messages",
        ),
        (
            lambda row: row["messages"][1].update(tool_call_id="call_1"),
            "line 7: messages[1]: unknown keys ['tool_call_id'] for a user message",
        ),
        (
            lambda row: row["messages"][2].update(function_call={"name": "get_weather", "arguments": "{}"}),
            "line 7: messages[2]: has both tool_calls and the legacy function_call; give one",
        ),
        (lambda row: row["messages"][1].update(name=""), "line 7: messages[1].name: must be a non-empty string"),
    ],
)
def test_each_tool_problem_names_its_line_and_field(change, message):
    assert problem_of(changed(change)).startswith(message)


def test_a_function_message_must_answer_a_function_call():
    row = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "function_call": {"name": "get_weather", "arguments": "{}"}},
            {"role": "function", "name": "get_time", "content": "12:00"},
        ],
        "functions": [WEATHER["function"]],
    }
    assert problem_of(row, at=3) == (
        "line 3: messages[2].name: answers no call: the assistant turn before it makes no function_call to 'get_time'"
    )


def test_a_request_history_may_call_any_function_and_leave_content_empty():
    conversation = check_conversation(
        [
            {"role": "user", "content": ""},
            {"role": "assistant", "tool_calls": [call(name="lookup")]},
            {"role": "tool", "tool_call_id": "call_1", "content": "x"},
        ],
        training=False,
    )
    assert conversation.tools is None and conversation.uses_tools
    with pytest.raises(ValueError, match=r"messages\[0\].weight: weight is for training files"):
        check_conversation([{"role": "assistant", "content": "x", "weight": 1}], training=False)
