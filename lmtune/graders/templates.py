"""OpenAI's grader templates: `{{ item.answer }}`, `{{sample.output_text}}`,
`{{ sample.output_tools[0].function.name }}`.

Each `{{ }}` holds a namespace (`item` or `sample`) and a JSON-path-like path of keys and list
indexes. A string value is put in as it is; any other value as JSON. A path that leads nowhere is
an error (OpenAI's `invalid_variable_error`), not an empty string: a typo in a key must not grade
every sample against "".
"""

from __future__ import annotations

import json
import re

PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_STEP = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_\-]*)|\[(\d+)\]|\[\"([^\"]*)\"\]|\['([^']*)'\]")
NAMESPACES = ("item", "sample")


class VariableError(LookupError):
    """A template names a variable that the item or sample does not have."""


def render(template: str, namespaces: dict[str, object]) -> str:
    return PLACEHOLDER.sub(lambda match: _text(lookup(match.group(1), namespaces)), template)


def lookup(reference: str, namespaces: dict[str, object]) -> object:
    """The value at `item.a.b[0]` (or `sample....`)."""
    steps = _steps(reference)
    if not steps or steps[0] not in NAMESPACES:
        raise VariableError(f"{reference!r}: a variable starts with item. or sample.")
    value = namespaces.get(steps[0])
    for step in steps[1:]:
        try:
            value = value[step]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            raise VariableError(f"{reference!r}: the {steps[0]} has no {step!r} there") from None
    return value


def _steps(reference: str) -> list[str | int]:
    steps, position = [], 0
    while position < len(reference):
        match = _STEP.match(reference, position)
        if match is None or match.end() == position:
            raise VariableError(f"{reference!r} is not a variable path (write item.key, sample.key[0].key)")
        name, index, quoted, single = match.groups()
        steps.append(int(index) if index is not None else next(p for p in (name, quoted, single) if p is not None))
        position = match.end()
    return steps


def variables(template: str) -> list[str]:
    """The variable paths a template names, checked for their syntax."""
    found = [match.group(1) for match in PLACEHOLDER.finditer(template)]
    for reference in found:
        steps = _steps(reference)
        if not steps or steps[0] not in NAMESPACES:
            raise VariableError(f"{{{{ {reference} }}}}: the only namespaces are item and sample")
    return found


def namespace(reference: str) -> str:
    """`item` or `sample`: where a variable path (as `variables` returns it) is read from."""
    return str(_steps(reference)[0])


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
