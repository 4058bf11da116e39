"""Conversations with tool calls in OpenAI's shapes, checked: function schemas (`tools`, or the legacy
`functions`), assistant `tool_calls` (or the legacy `function_call`) and the `tool` (or `function`)
messages that answer them.

One checker serves training rows (lmtune/training_data.py, at upload and in the trainer) and chat
completion requests (service/routes/inference.py). A problem is a ToolProblem naming its field
(`messages[3].tool_calls[0].function.arguments`), so a training file's error adds its line and a
request's error its `param`. What comes back has one form, the current one: the legacy form becomes
`tools`, `tool_calls` with ids made up for it and `tool` messages, and every call's arguments are
parsed, as chat templates render them as objects.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

import jsonschema

from lmtune.problems import quote, quote_names

FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
MAX_TOOLS = 128  # OpenAI's limit for one request
MAX_DESCRIPTION_CHARS = 4096
MAX_SCHEMA_CHARS = 32 * 1024  # one function's parameters, as JSON
MAX_SCHEMA_DEPTH = 16  # nesting of objects and lists in one function's parameters
MAX_CALLS = 32  # in one assistant turn
MAX_ARGUMENTS_CHARS = 64 * 1024
MAX_ID_CHARS = 256
MAX_PARTICIPANT_CHARS = 256  # a message's `name`
ROLES = ("system", "user", "assistant", "tool", "function")
MESSAGE_KEYS = {
    "system": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "weight", "tool_calls", "function_call"},
    "tool": {"role", "content", "tool_call_id", "name"},
    "function": {"role", "content", "name"},
}
FALLBACK_OPEN, FALLBACK_CLOSE = "<tool_call>", "</tool_call>"
ANSWER_OPEN, ANSWER_CLOSE = "<tool_response>", "</tool_response>"
TOOLS_PROMPT = (
    "# Tools\n\nYou may call these functions, whose signatures are within <tools></tools>:\n"
    "<tools>\n{tools}\n</tools>\n\n"
    "To call one, answer with its name and arguments as JSON within <tool_call></tool_call>:\n"
    '<tool_call>\n{{"name": <function name>, "arguments": <arguments as a JSON object>}}\n</tool_call>'
)
ONE_CALL = "\nCall at most one function in a turn."  # when parallel_tool_calls is false
JSON_TYPES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}


class ToolProblem(ValueError):
    """`field: what is wrong, and how to fix it`; `field` is the request's `param`."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class Conversation:
    """Messages in the current form: `{role, content, name?}`; an assistant's `tool_calls` are
    `[{id, type: "function", function: {name, arguments: <object>}}]` and its `weight` is 0 or 1; a
    tool message is `{role: "tool", tool_call_id, name (the function's), content}`. `tools` is None
    when the conversation lists no functions."""

    messages: list[dict]
    tools: list[dict] | None = None
    parallel_tool_calls: bool = True

    @property
    def uses_tools(self) -> bool:
        return self.tools is not None or any(m["role"] == "tool" or "tool_calls" in m for m in self.messages)


def check_conversation(
    messages: object,
    tools: object = None,
    functions: object = None,
    parallel_tool_calls: object = None,
    *,
    training: bool = True,
) -> Conversation:
    """A training row's conversation (`training`: content is required, `weight` is allowed, every
    call names a listed function and `parallel_tool_calls: false` allows one call a turn) or a
    request's history (a call may name any function; content may be empty)."""
    if tools is not None and functions is not None:
        raise ToolProblem("functions", "list the functions in tools or in the legacy functions, not both")
    listed_in = "functions" if functions is not None else "tools"
    listed = check_functions(functions) if functions is not None else check_tools(tools) if tools is not None else None
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise ToolProblem("parallel_tool_calls", f"must be true or false, got {quote(parallel_tool_calls)}")
    if not isinstance(messages, list) or not messages:
        raise ToolProblem("messages", 'must be a non-empty list of {"role", "content"} objects')
    rules = _Rules(training, listed, listed_in, parallel_tool_calls is not False)
    checked = [rules.message(message, f"messages[{index}]") for index, message in enumerate(messages)]
    if training and not any(message["role"] == "assistant" for message in checked):
        raise ValueError("at least one message with the assistant role is required")
    return Conversation(checked, listed, parallel_tool_calls is not False)


def check_tools(tools: object, field: str = "tools") -> list[dict]:
    """`[{"type": "function", "function": {name, description?, parameters?, strict?}}]`, names unique."""
    _check_list(tools, field, MAX_TOOLS, "function")
    checked = []
    for index, tool in enumerate(tools):
        where = f"{field}[{index}]"
        if not isinstance(tool, dict):
            raise ToolProblem(where, f'must be {{"type": "function", "function": {{...}}}}, got {_json_type(tool)}')
        if tool.get("type") != "function":
            raise ToolProblem(
                f"{where}.type", f'must be "function" (the only kind of tool), got {quote(tool.get("type"))}'
            )
        _unknown_keys(tool, {"type", "function"}, where)
        checked.append({"type": "function", "function": _check_function(tool.get("function"), f"{where}.function")})
    _unique_names(checked, field)
    return checked


def check_functions(functions: object, field: str = "functions") -> list[dict]:
    """The legacy `[{name, description?, parameters?}]`, as tools."""
    _check_list(functions, field, MAX_TOOLS, "function")
    checked = [
        {"type": "function", "function": _check_function(function, f"{field}[{index}]")}
        for index, function in enumerate(functions)
    ]
    _unique_names(checked, field)
    return checked


def parse_arguments(arguments: object, field: str) -> dict:
    """A call's `arguments`: a string holding a JSON object."""
    if not isinstance(arguments, str):
        raise ToolProblem(
            field,
            f"must be a string holding a JSON object, got {_json_type(arguments)}; "
            'encode the arguments as JSON text, e.g. "{\\"city\\": \\"Paris\\"}"',
        )
    if len(arguments) > MAX_ARGUMENTS_CHARS:
        raise ToolProblem(field, f"{len(arguments):,} characters; at most {MAX_ARGUMENTS_CHARS:,} are allowed")
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as error:
        raise ToolProblem(field, f"not valid JSON ({error.msg} at column {error.colno}): {quote(arguments)}") from None
    except (RecursionError, ValueError):
        raise ToolProblem(field, "not valid JSON: nested too deeply, or a number too long") from None
    if not isinstance(value, dict):
        raise ToolProblem(field, f"must encode a JSON object (the arguments by name), got {_json_type(value)}")
    return value


def function_names(tools: list[dict]) -> list[str]:
    return [tool["function"]["name"] for tool in tools]


class _Rules:
    """Checks one message after another; remembers the calls that a tool message may answer."""

    def __init__(self, training: bool, listed: list[dict] | None, listed_in: str, parallel: bool):
        self.training, self.listed, self.listed_in, self.parallel = training, listed, listed_in, parallel
        self.names = set(function_names(listed)) if listed is not None else set()
        self.ids: set[str] = set()  # every call id so far: each names one call
        self.open: dict[str, str] = {}  # the calls of the assistant turn just before: id -> function name
        self.legacy_calls = 0

    def message(self, message: object, where: str) -> dict:
        if not isinstance(message, dict):
            raise ToolProblem(where, "must be an object with role and content")
        role = message.get("role")
        if role not in ROLES:
            raise ToolProblem(where, f"unknown role {quote(role)}; use one of {', '.join(ROLES)}")
        if "weight" in message and role != "assistant":
            raise ToolProblem(where, "weight is only allowed on assistant messages")
        unknown = set(message) - MESSAGE_KEYS[role]
        if unknown:
            raise ToolProblem(where, f"unknown keys {quote_names(sorted(unknown))} for a {role} message")
        if role == "assistant":
            return {"role": role, **self._participant_of(message, where), **self._assistant(message, where)}
        content = self._content(message, where, required=True, empty=role in ("tool", "function"))
        if role == "tool":
            call_id, name = self._answer_by_id(message.get("tool_call_id"), where)
        elif role == "function":
            call_id, name = self._answer_by_name(self._participant(message.get("name"), f"{where}.name"), where)
        else:
            self.open = {}  # a tool message answers the turn just before it, with nothing in between
            return {"role": role, "content": content, **self._participant_of(message, where)}
        return {"role": "tool", "tool_call_id": call_id, "name": name, "content": content}

    def _assistant(self, message: dict, where: str) -> dict:
        if message.get("tool_calls") is not None and message.get("function_call") is not None:
            raise ToolProblem(where, "has both tool_calls and the legacy function_call; give one")
        calls = self._calls(message, where)
        checked: dict = {"content": self._content(message, where, required=not calls, empty=bool(calls))}
        if calls:
            checked["tool_calls"] = calls
        self.open = {call["id"]: call["function"]["name"] for call in calls}
        if "weight" in message:
            weight = message["weight"]
            if not self.training:
                raise ToolProblem(f"{where}.weight", "weight is for training files; leave it out of a request")
            if isinstance(weight, bool) or weight not in (0, 1):
                raise ToolProblem(where, f"bad weight {quote(weight)}; use 0 (no loss) or 1 (train on it)")
        if self.training:
            checked["weight"] = message.get("weight", 1)
        return checked

    def _calls(self, message: dict, where: str) -> list[dict]:
        if message.get("function_call") is not None:
            call = message["function_call"]
            field = f"{where}.function_call"
            if not isinstance(call, dict):
                raise ToolProblem(field, f'must be {{"name", "arguments"}}, got {_json_type(call)}')
            self.legacy_calls += 1
            return [self._call(f"call_legacy_{self.legacy_calls}", call, field)]
        calls = message.get("tool_calls")
        if calls is None:
            return []
        field = f"{where}.tool_calls"
        _check_list(calls, field, MAX_CALLS, "call")
        if self.training and not self.parallel and len(calls) > 1:
            raise ToolProblem(
                field,
                f"{len(calls)} calls in one turn, but parallel_tool_calls is false: make one call a turn, "
                "or set parallel_tool_calls to true",
            )
        checked = []
        for index, call in enumerate(calls):
            where_call = f"{field}[{index}]"
            if not isinstance(call, dict):
                raise ToolProblem(
                    where_call, f'must be {{"id", "type": "function", "function"}}, got {_json_type(call)}'
                )
            _unknown_keys(call, {"id", "type", "function"}, where_call)
            if call.get("type") != "function":
                raise ToolProblem(f"{where_call}.type", f'must be "function", got {quote(call.get("type"))}')
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id or len(call_id) > MAX_ID_CHARS:
                raise ToolProblem(
                    f"{where_call}.id", f"must be a non-empty string of at most {MAX_ID_CHARS} characters"
                )
            function = call.get("function")
            if not isinstance(function, dict):
                raise ToolProblem(
                    f"{where_call}.function", f'must be {{"name", "arguments"}}, got {_json_type(function)}'
                )
            checked.append(self._call(call_id, function, f"{where_call}.function", id_field=f"{where_call}.id"))
        return checked

    def _call(self, call_id: str, function: dict, field: str, id_field: str | None = None) -> dict:
        _unknown_keys(function, {"name", "arguments"}, field)
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ToolProblem(f"{field}.name", "the function's name is required (a non-empty string)")
        if self.training and name not in self.names:
            if self.listed is None:
                raise ToolProblem(
                    f"{field}.name", f"calls {quote(name)}, but the row lists no functions: add it to the row's tools"
                )
            raise ToolProblem(
                f"{field}.name",
                f"calls {quote(name)}, which the row's {self.listed_in} do not list "
                f"(they list {quote_names(sorted(self.names))})",
            )
        arguments = parse_arguments(function.get("arguments"), f"{field}.arguments")
        if call_id in self.ids:
            raise ToolProblem(
                id_field or field,
                f"the id {quote(call_id)} is already used by an earlier call; each call needs its own",
            )
        self.ids.add(call_id)
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}

    def _answer_by_id(self, call_id: object, where: str) -> tuple[str, str]:
        if not isinstance(call_id, str) or not call_id:
            raise ToolProblem(f"{where}.tool_call_id", "the id of the call it answers is required (a string)")
        if call_id not in self.open:
            if call_id in self.ids:
                raise ToolProblem(
                    f"{where}.tool_call_id",
                    f"call {quote(call_id)} is already answered, or is not a call of the assistant turn just before",
                )
            raise ToolProblem(
                f"{where}.tool_call_id",
                f"answers no call: {quote(call_id)} is not the id of a call in the assistant turn before it"
                + (f" (its calls: {quote_names(list(self.open))})" if self.open else " (that turn makes no calls)"),
            )
        return call_id, self.open.pop(call_id)

    def _answer_by_name(self, name: str, where: str) -> tuple[str, str]:
        for call_id, called in self.open.items():
            if called == name:
                del self.open[call_id]
                return call_id, name
        raise ToolProblem(
            f"{where}.name", f"answers no call: the assistant turn before it makes no function_call to {quote(name)}"
        )

    def _content(self, message: dict, where: str, required: bool, empty: bool) -> str | None:
        """A string, or None where it is not `required`; empty only where `empty` allows it (a tool's
        result) or in a request."""
        content = message.get("content")
        if content is None and not required:
            return None
        if not isinstance(content, str) or (self.training and not empty and not content):
            what = "a string" if empty or not self.training else "a non-empty string"
            raise ToolProblem(where, f"missing content ({what} is required)")
        if self.training and "\x00" in content:
            raise ToolProblem(f"{where}.content", "contains a NUL character (\\u0000)")
        return content

    def _participant_of(self, message: dict, where: str) -> dict:
        return {} if message.get("name") is None else {"name": self._participant(message["name"], f"{where}.name")}

    def _participant(self, name: object, field: str) -> str:
        if not isinstance(name, str) or not name or len(name) > MAX_PARTICIPANT_CHARS:
            raise ToolProblem(field, f"must be a non-empty string of at most {MAX_PARTICIPANT_CHARS} characters")
        return name


def _check_function(function: object, where: str) -> dict:
    if not isinstance(function, dict):
        raise ToolProblem(where, f"must be {{name, description?, parameters?}}, got {_json_type(function)}")
    _unknown_keys(function, {"name", "description", "parameters", "strict"}, where)
    name = function.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
        raise ToolProblem(f"{where}.name", f"must be 1 to 64 letters, digits, underscores or dashes, got {quote(name)}")
    checked: dict = {"name": name}
    if function.get("description") is not None:
        description = function["description"]
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
            raise ToolProblem(
                f"{where}.description", f"must be a string of at most {MAX_DESCRIPTION_CHARS:,} characters"
            )
        checked["description"] = description
    if function.get("parameters") is not None:
        checked["parameters"] = _check_parameters(function["parameters"], f"{where}.parameters")
    if function.get("strict") is not None:
        if not isinstance(function["strict"], bool):
            raise ToolProblem(f"{where}.strict", f"must be true or false, got {quote(function['strict'])}")
        checked["strict"] = function["strict"]
    return checked


def _check_parameters(parameters: object, where: str) -> dict:
    if not isinstance(parameters, dict):
        raise ToolProblem(where, f"must be a JSON Schema object, got {_json_type(parameters)}")
    text = json.dumps(parameters, sort_keys=True)
    if len(text) > MAX_SCHEMA_CHARS:
        raise ToolProblem(where, f"{len(text):,} characters of JSON; at most {MAX_SCHEMA_CHARS:,} are allowed")
    if _depth(parameters) > MAX_SCHEMA_DEPTH:
        raise ToolProblem(where, f"nested more than {MAX_SCHEMA_DEPTH} levels deep")
    if parameters.get("type") != "object":
        raise ToolProblem(
            f"{where}.type", f'the parameters must be a schema of "type": "object", got {quote(parameters.get("type"))}'
        )
    problem = _schema_problem(text)
    if problem:
        raise ToolProblem(where, f"not a valid JSON Schema: {problem}")
    return parameters


@functools.lru_cache(maxsize=256)  # a file repeats the same few schemas on every line
def _schema_problem(schema_json: str) -> str | None:
    try:
        jsonschema.Draft202012Validator.check_schema(json.loads(schema_json))
    except jsonschema.SchemaError as error:
        at = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.path)
        return f"{quote(error.message, 120)}" + (f" at {at.lstrip('.')}" if at else "")
    return None


def _depth(value: object) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [
            child
            for item in level
            if isinstance(item, (dict, list))
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, (dict, list))
        ]
    return depth


def _check_list(value: object, field: str, limit: int, what: str) -> None:
    if not isinstance(value, list) or not value:
        raise ToolProblem(field, f"must be a non-empty list of {what}s, or left out")
    if len(value) > limit:
        raise ToolProblem(field, f"{len(value):,} {what}s; at most {limit} are allowed")


def _unique_names(tools: list[dict], field: str) -> None:
    seen: set[str] = set()
    for index, name in enumerate(function_names(tools)):
        if name in seen:
            raise ToolProblem(f"{field}[{index}]", f"function {quote(name)} is listed twice; names must be unique")
        seen.add(name)


def _unknown_keys(value: dict, allowed: set[str], where: str) -> None:
    unknown = set(value) - allowed
    if unknown:
        raise ToolProblem(where, f"unknown keys {quote_names(sorted(unknown))} (allowed: {', '.join(sorted(allowed))})")


def _json_type(value: object) -> str:
    return "null" if value is None else JSON_TYPES.get(type(value), type(value).__name__)


# The fallback format (workers/models/tool_format.py) is plain text, so the API's token estimate
# (lmtune/token_count.py) renders it as the trainer does.
def fallback_messages(conversation: Conversation, offer_tools: bool = True) -> tuple[list[dict], list[int]]:
    """The conversation in plain `{role, content}` turns, and which of them are the assistant turns
    of `conversation.messages` (by position in the result). `offer_tools: False` leaves the tools
    out of the system message (tool_choice `none`)."""
    messages = conversation.messages
    turns: list[dict] = []
    if conversation.tools and offer_tools:
        listing = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in conversation.tools)
        prompt = TOOLS_PROMPT.format(tools=listing) + ("" if conversation.parallel_tool_calls else ONE_CALL)
        if messages[0]["role"] == "system":
            turns.append({"role": "system", "content": f"{messages[0]['content']}\n\n{prompt}"})
            messages = messages[1:]
        else:
            turns.append({"role": "system", "content": prompt})
    assistant_turns = []
    for message in messages:
        if message["role"] == "tool":
            answer = f"{ANSWER_OPEN}\n{message['content']}\n{ANSWER_CLOSE}"
            if turns and turns[-1].get("answers"):  # the results of one turn's calls share a user turn
                turns[-1]["content"] += "\n" + answer
            else:
                turns.append({"role": "user", "content": answer, "answers": True})
            continue
        if message["role"] == "assistant":
            assistant_turns.append(len(turns))
            turns.append({"role": "assistant", "content": fallback_assistant_text(message)})
        else:
            turns.append({"role": message["role"], "content": message["content"]})
    return [{"role": t["role"], "content": t["content"]} for t in turns], assistant_turns


def fallback_assistant_text(message: dict) -> str:
    """An assistant turn's text, then each call as a `<tool_call>` block."""
    calls = [
        f"{FALLBACK_OPEN}\n{json.dumps(_named_arguments(call), ensure_ascii=False)}\n{FALLBACK_CLOSE}"
        for call in message.get("tool_calls", [])
    ]
    return "\n".join(([message["content"]] if message.get("content") else []) + calls)


def _named_arguments(call: dict) -> dict:
    return {"name": call["function"]["name"], "arguments": call["function"]["arguments"]}
