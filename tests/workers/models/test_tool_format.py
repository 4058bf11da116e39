"""Tool-calling rows rendered for training: the model's own template when it renders tools, else the
fallback format; the loss on assistant turns (calls included) and on no tool result, token by token;
and a model's answer read back into content and calls, whole or as it streams."""

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from cli.sample_data import TOOLS
from lmtune.tool_calls import check_conversation
from lmtune.training_data import Row
from workers.models.chat_format import TemplateError, chat_segments, tool_format_of
from workers.models.tiny_model import build_byte_tokenizer
from workers.models.tool_format import FALLBACK, CallSplitter, ToolFormat, parse_call
from workers.training.data import IGNORE_INDEX, encode_row

HERMES_STYLE = (Path(__file__).parent / "hermes_style_template.jinja").read_text()
WEATHER = TOOLS[0]  # get_weather(city)
ROW = {
    "messages": [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "18"},
        {"role": "tool", "tool_call_id": "b", "content": "9"},
        {"role": "assistant", "content": "18 in Paris, 9 in Oslo."},
    ],
    "tools": [WEATHER],
}
CALLS = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
)


def tokenizer_with(template: str | None):
    tokenizer = build_byte_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


def runs(row: dict, tokenizer) -> list[tuple[str, bool]]:
    """The encoded row as runs of consecutive tokens that do or do not carry loss, decoded."""
    ids, labels = encode_row(Row(1, "chat", row), tokenizer)
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(ids, labels))
    found: list[tuple[list[int], bool]] = []
    for token, label in zip(ids, labels):
        target = label != IGNORE_INDEX
        if found and found[-1][1] == target:
            found[-1][0].append(token)
        else:
            found.append(([token], target))
    return [(tokenizer.decode(tokens), target) for tokens, target in found]


def texts(found: list[tuple[str, bool]], targets: list[bool]) -> list[str]:
    assert [target for _, target in found] == targets
    return [text for text, _ in found]


def test_a_template_without_tools_gets_the_fallback_format_and_loss_on_calls_not_results():
    tokenizer = build_byte_tokenizer()  # ChatML, which knows nothing of tools
    assert tool_format_of(tokenizer) == FALLBACK
    system, calls, results, answer = texts(runs(ROW, tokenizer), [False, True, False, True])
    assert system.startswith("<s><|im_start|>system\n# Tools\n") and json.dumps(WEATHER) in system
    assert system.endswith("<|im_start|>user\nWeather in Paris and Oslo?<|im_end|>\n<|im_start|>assistant\n")
    assert calls == CALLS + "<|im_end|>\n"  # the arguments as the model will write them, one call a block
    assert results == (
        "<|im_start|>user\n<tool_response>\n18\n</tool_response>\n<tool_response>\n9\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert answer == "18 in Paris, 9 in Oslo.<|im_end|>\n"


@pytest.mark.slow  # the real model's tokenizer
def test_smollm2s_template_gets_the_fallback_with_the_loss_on_its_calls_and_answers(smollm2):
    tokenizer = AutoTokenizer.from_pretrained(smollm2)  # its template renders role and content only
    assert tool_format_of(tokenizer) == FALLBACK
    system, calls, results, answer = texts(runs(ROW, tokenizer), [False, True, False, True])
    assert system.startswith("<|im_start|>system\n# Tools\n")  # the tools' system turn replaces its default one
    assert system.endswith("<|im_start|>user\nWeather in Paris and Oslo?<|im_end|>\n<|im_start|>assistant\n")
    assert calls == CALLS + "<|im_end|>\n"
    assert results == (
        "<|im_start|>user\n<tool_response>\n18\n</tool_response>\n<tool_response>\n9\n</tool_response>"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert answer == "18 in Paris, 9 in Oslo.<|im_end|>\n"


def test_a_call_turn_of_weight_0_carries_no_loss():
    row = json.loads(json.dumps(ROW))
    row["messages"][1]["weight"] = 0
    assert [target for _, target in runs(row, build_byte_tokenizer())] == [False, True]


def test_the_fallback_says_so_when_calls_are_one_at_a_time():
    row = {**ROW, "parallel_tool_calls": False, "messages": ROW["messages"][:1] + [_one_call_turn()]}
    system, call = texts(runs(row, build_byte_tokenizer()), [False, True])
    assert "Call at most one function in a turn." in system
    assert call == CALLS.split("\n<tool_call>")[0] + "<|im_end|>\n"


def _one_call_turn() -> dict:
    return {**ROW["messages"][1], "tool_calls": ROW["messages"][1]["tool_calls"][:1]}


def test_a_template_that_renders_tools_is_used_as_it_is():
    tokenizer = tokenizer_with(HERMES_STYLE)
    assert tool_format_of(tokenizer) == ToolFormat(
        "template", "<tool_call>\n", "</tool_call>", '{"name": ', ', "arguments": '
    )
    system, calls, results, answer = texts(runs(ROW, tokenizer), [False, True, False, True])
    assert system.startswith("<|im_start|>system\nTools:\n" + json.dumps(WEATHER))
    assert calls == CALLS.replace("\n<tool_call>", "<tool_call>") + "<|im_end|>\n"  # the template's own spacing
    assert results.startswith("<|im_start|>user\n<tool_response>\n18\n</tool_response>\n<tool_response>\n9")
    assert answer == "18 in Paris, 9 in Oslo.<|im_end|>\n"


IGNORES_TOOLS = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
DROPS_CALLS = "{% for t in tools or [] %}{{ t | tojson }}\n{% endfor %}" + IGNORES_TOOLS
FAILS_ON_TOOL_ROLE = (
    "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('roles must alternate') }}{% endif %}"
    "{{ m.role }}: {{ m.content }}{{ (m.tool_calls or []) | tojson }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}{% for t in tools or [] %}{{ t | tojson }}{% endfor %}"
)
UNTAGGED_CALLS = (  # Llama 3.1's way: a bare JSON object, which cannot be told from content
    "{% for t in tools or [] %}{{ t | tojson }}\n{% endfor %}{% for m in messages %}{{ m.role }}: {{ m.content or '' }}"
    '{% for c in m.tool_calls or [] %}{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}'
    "{% endfor %}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)
NOT_A_PREFIX = HERMES_STYLE.replace("<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant:\n{% endif %}")


@pytest.mark.parametrize(
    "template",
    [IGNORES_TOOLS, DROPS_CALLS, FAILS_ON_TOOL_ROLE, UNTAGGED_CALLS, NOT_A_PREFIX],
    ids=lambda t: str(len(t)),
)
def test_a_template_that_cannot_render_tool_calls_gets_the_fallback(template):
    tokenizer = tokenizer_with(template)
    assert tool_format_of(tokenizer) == FALLBACK
    if template is not NOT_A_PREFIX:  # the fallback renders in the template's own plain turns
        text = "".join(text for text, _ in chat_segments(check_conversation(**_args(ROW)), tokenizer))
        assert CALLS in text and "<tool_response>\n18\n</tool_response>" in text


def test_a_template_that_cannot_locate_turns_is_still_refused_with_tools():
    with pytest.raises(TemplateError, match="growing prefix"):
        chat_segments(check_conversation(**_args(ROW)), tokenizer_with(NOT_A_PREFIX))


def _args(row: dict) -> dict:
    return {"messages": row["messages"], "tools": row.get("tools")}


@pytest.mark.parametrize(
    "choice, prefill",
    [
        ("auto", ""),
        ("none", ""),
        ("required", '<tool_call>\n{"name":'),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            '<tool_call>\n{"name": "get_weather", "arguments":',
        ),
    ],
)
def test_a_required_call_is_begun_for_the_model_up_to_a_token_boundary(choice, prefill):
    assert FALLBACK.prefill(choice) == prefill


NAMES = {"get_weather", "get_time"}


def split(text: str, pieces: int | None = None) -> list[tuple[str, object]]:
    """What a splitter makes of `text`, fed whole or in pieces of `pieces` characters, merged."""
    splitter = CallSplitter(FALLBACK, NAMES)
    size = pieces or len(text) or 1
    settled = [item for start in range(0, len(text), size) for item in splitter.feed(text[start : start + size])]
    merged: list[tuple[str, object]] = []
    for kind, value in settled + splitter.finish():
        if merged and kind == "content" == merged[-1][0]:
            merged[-1] = ("content", merged[-1][1] + value)
        else:
            merged.append((kind, value))
    return merged


PARIS = {"name": "get_weather", "arguments": '{"city": "Paris"}'}


@pytest.mark.parametrize(
    "text, expected",
    [
        (CALLS, [("call", PARIS), ("call", {"name": "get_weather", "arguments": '{"city": "Oslo"}'})]),
        ("Let me look.\n" + CALLS.split("\n<tool_call>")[0], [("content", "Let me look."), ("call", PARIS)]),
        ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}', [("call", PARIS)]),  # cut at a stop
        (
            '<tool_call>{"name": "get_time", "arguments": "{\\"city\\": \\"Oslo\\"}"}</tool_call>',
            [("call", {"name": "get_time", "arguments": '{"city": "Oslo"}'})],
        ),
        ("It is sunny. <tool", [("content", "It is sunny. <tool")]),
        ("It is sunny.\n", [("content", "It is sunny.\n")]),
        (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": Paris}}\n</tool_call>',
            [("content", '<tool_call>\n{"name": "get_weather", "arguments": {"city": Paris}}\n</tool_call>')],
        ),
        (
            '<tool_call>\n{"name": "delete_all", "arguments": {}}\n</tool_call>',
            [("content", '<tool_call>\n{"name": "delete_all", "arguments": {}}\n</tool_call>')],
        ),
        (
            '<tool_call>\n{"name": "get_weather", "arguments": [1]}\n</tool_call> done',
            [("content", '<tool_call>\n{"name": "get_weather", "arguments": [1]}\n</tool_call> done')],
        ),
        (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa',
            [("content", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa')],
        ),
    ],
    ids=[
        "two calls",
        "content then a call",
        "no closing tag",
        "arguments as a string",
        "a tag's start",
        "trailing newline",
        "bad JSON",
        "unlisted function",
        "arguments not an object",
        "cut short",
    ],
)
def test_an_answer_is_read_into_content_and_calls_alike_whole_and_streamed(text, expected):
    assert split(text) == expected
    assert split(text, pieces=1) == expected
    assert split(text, pieces=7) == expected


def test_content_is_streamed_as_it_comes_except_what_may_start_a_call():
    splitter = CallSplitter(FALLBACK, NAMES)
    assert splitter.feed("Sunny <tool") == [("content", "Sunny")]
    assert splitter.feed("s are fun") == [("content", " <tools are fun")]
    assert parse_call('{"name": "get_time", "parameters": {}}', NAMES) == {"name": "get_time", "arguments": "{}"}
