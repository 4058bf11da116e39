"""An Ollama `Modelfile` for an exported GGUF file: the chat template in Ollama's (Go) template
language, the stop tokens and the sampling defaults, so that `ollama create` makes a model that
answers as the fine-tuned one did here.

Ollama cannot run the model's Jinja template, so the Go template is read off it: the template
renders a conversation whose texts are markers, and what it writes between them is each role's
opening and closing (split after the end-of-turn token); what it writes with no system message
is the default system prompt, which becomes `SYSTEM`.
"""

from __future__ import annotations

import json
from pathlib import Path

from workers.models.generation import end_of_turn_ids, render_chat
from workers.models.gguf_export import adds_bos

_SYSTEM, _USER, _ASSISTANT, _NEXT = "\x02S\x03", "\x02U\x03", "\x02A\x03", "\x02N\x03"
_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}  # top_k 0: off
_OLLAMA_NAMES = {"repetition_penalty": "repeat_penalty"}


class TemplateShapeError(ValueError):
    """The chat template does not write turns in an order a Go template can repeat."""


def modelfile(tokenizer, gguf_name: str, model_dir: Path) -> str:
    stops = [tokenizer.convert_ids_to_tokens(i) for i in end_of_turn_ids(tokenizer)]
    lines = [f"FROM ./{gguf_name}", ""]
    try:
        template, system = go_template(tokenizer, stops)
    except TemplateShapeError as error:  # Ollama then uses the template in the GGUF file's metadata
        lines += [f"# no TEMPLATE: {error}; Ollama reads the chat template in the GGUF file", ""]
    else:
        lines += [f'TEMPLATE """{template}"""']
        if system:
            lines += [f'SYSTEM """{system}"""']
        lines.append("")
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    for key, value in _sampling_defaults(model_dir).items():
        lines.append(f"PARAMETER {_OLLAMA_NAMES.get(key, key)} {value}")
    return "\n".join(lines) + "\n"


def go_template(tokenizer, stops: list[str]) -> tuple[str, str | None]:
    """(Go template, default system prompt or None)."""
    conversation = [
        {"role": "system", "content": _SYSTEM},
        {"role": "user", "content": _USER},
        {"role": "assistant", "content": _ASSISTANT},
        {"role": "user", "content": _NEXT},
    ]
    text = render_chat(tokenizer, conversation, generation_prompt=True)
    pieces = _between(text, [_SYSTEM, _USER, _ASSISTANT, _NEXT])
    system_open = pieces[0]
    system_close, user_open = _split_turn(pieces[1], stops)
    user_close, assistant_open = _split_turn(pieces[2], stops)
    assistant_close, next_open = _split_turn(pieces[3], stops)
    if next_open != user_open or pieces[4] != pieces[2]:
        raise TemplateShapeError("its turns are not written alike each time")
    written_open, lead, bos = system_open, "", tokenizer.bos_token or ""
    # the template starts the text with BOS, once; unless that token is what opens every turn, as
    # SmolLM2's BOS <|im_start|> is: then its system turn opens as its user turn does
    opens_turns = system_open.replace("system", "user") == user_open
    if bos and system_open.startswith(bos) and not opens_turns:
        system_open = system_open[len(bos) :]
        lead = "" if adds_bos(tokenizer) else bos  # else Ollama adds it (the GGUF file's add_bos_token)
    template = (
        f"{_go(lead)}{{{{ range .Messages }}}}"
        f'{{{{ if eq .Role "system" }}}}{_go(system_open)}{{{{ .Content }}}}{_go(system_close)}'
        f'{{{{ else if eq .Role "user" }}}}{_go(user_open)}{{{{ .Content }}}}{_go(user_close)}'
        f'{{{{ else if eq .Role "assistant" }}}}{_go(assistant_open)}{{{{ .Content }}}}{_go(assistant_close)}'
        f"{{{{ end }}}}{{{{ end }}}}{_go(assistant_open)}"
    )
    return template, _default_system(tokenizer, written_open, system_close, user_open)


def _between(text: str, markers: list[str]) -> list[str]:
    pieces, rest = [], text
    for marker in markers:
        if rest.count(marker) != 1:
            raise TemplateShapeError("it does not write each message once")
        before, rest = rest.split(marker)
        pieces.append(before)
    return [*pieces, rest]


def _split_turn(text: str, stops: list[str]) -> tuple[str, str]:
    """A turn's closing (through its end-of-turn token and the whitespace after it) and the next opening."""
    for stop in stops:
        at = text.find(stop)
        if at >= 0:
            end = at + len(stop)
            while end < len(text) and text[end] in " \n":
                end += 1
            return text[:end], text[end:]
    raise TemplateShapeError("no end-of-turn token closes its turns")


def _default_system(tokenizer, system_open: str, system_close: str, user_open: str) -> str | None:
    alone = render_chat(tokenizer, [{"role": "user", "content": _USER}], generation_prompt=True)
    head = alone.split(_USER)[0]
    if head.startswith(system_open) and head.endswith(system_close + user_open):
        return head[len(system_open) : len(head) - len(system_close + user_open)] or None
    return None


def _go(literal: str) -> str:
    """A literal in a Go template: only `{{` needs quoting."""
    return literal.replace("{{", '{{ "{{" }}')


def _sampling_defaults(model_dir: Path) -> dict:
    """The model's generation_config over lmtune's (and OpenAI's) defaults, not Ollama's own
    (temperature 0.8, top_k 40, repeat_penalty 1.1), which would answer differently."""
    path = model_dir / "generation_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    if not config.get("do_sample", True):
        return {**_DEFAULTS, "temperature": 0}
    return {**_DEFAULTS, **{key: config[key] for key in _DEFAULTS if config.get(key) is not None}}
