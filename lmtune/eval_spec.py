"""OpenAI's Evals API shapes that the API checks and the worker runs: an eval's `custom` data source
config, and a run's data source (`completions`: sample a model on each item; `jsonl`: the samples are
given). The stored run keeps its data source as given; `rows` reads its items wherever they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from lmtune.bounds import at_most_items
from lmtune.graders.schema import MAX_TEMPLATE_CHARS, ContentPart

MAX_INLINE_ITEMS = 10_000
MAX_TOKENS = 4096


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomDataSourceConfig(_Strict):
    type: Literal["custom"]
    item_schema: dict = Field(description="a JSON schema of each item (an object's properties)")
    include_sample_schema: bool = False

    def schema_shown(self) -> dict:
        """What OpenAI shows as the config's `schema`: the item (and sample) namespaces."""
        properties = {"item": self.item_schema}
        if self.include_sample_schema:
            properties["sample"] = SAMPLE_SCHEMA
        return {"type": "object", "properties": properties, "required": list(properties)}


SAMPLE_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "choices": {"type": "array"},
        "output_text": {"type": "string"},
        "output_json": {"type": "object"},
        "output_tools": {"type": "array"},
    },
    "required": ["model", "choices"],
}


class Row(_Strict):
    item: dict
    sample: dict | None = None


class FileContent(_Strict):
    type: Literal["file_content"]
    content: Annotated[list[Row], at_most_items(MAX_INLINE_ITEMS)]


class FileId(_Strict):
    type: Literal["file_id"]
    id: str = Field(min_length=1, max_length=64)


Source = Annotated[FileContent | FileId, Field(discriminator="type")]


class TemplateMessage(BaseModel):
    """A chat message of a template; `{{item.*}}` in its content is filled from each item."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, Field(max_length=MAX_TEMPLATE_CHARS)] | list[ContentPart] | ContentPart
    type: Literal["message"] | None = None

    def text(self) -> str:
        parts = self.content if isinstance(self.content, list) else [self.content]
        return "".join(part if isinstance(part, str) else part.text for part in parts)


class Template(_Strict):
    type: Literal["template"]
    template: Annotated[list[TemplateMessage], Field(min_length=1), at_most_items(64)]


class ItemReference(_Strict):
    type: Literal["item_reference"]
    item_reference: str = Field(min_length=1, max_length=256, description='e.g. "item.messages": a list of messages')


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    reasoning_effort: str | None = Field(None, max_length=16)
    response_format: dict | None = Field(
        None, description="accepted; output_json is filled whenever the output is JSON"
    )


class CompletionsDataSource(_Strict):
    type: Literal["completions"]
    source: Source
    model: str = Field(min_length=1, max_length=512, description="any model of this key: catalogue, ft:…, checkpoint")
    input_messages: Annotated[Template | ItemReference, Field(discriminator="type")]
    sampling_params: SamplingParams | None = None


class JsonlDataSource(_Strict):
    type: Literal["jsonl"]
    source: Source


RunDataSource = Annotated[CompletionsDataSource | JsonlDataSource, Field(discriminator="type")]


class RowsError(ValueError):
    """The data source's items cannot be read; the message names the line."""


def rows(source: FileContent | FileId, path: Path | None, limit: int) -> list[Row]:
    """The items of a source: inline, or a file's lines (purpose `evals`: {"item", "sample"} per line;
    a fine-tuning file's rows are items as they are)."""
    if isinstance(source, FileContent):
        return source.content
    found = []
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise RowsError(f"line {number}: not UTF-8 text") from None
            if not line.strip():
                continue
            if len(found) == limit:
                raise RowsError(f"the file has more than {limit:,} items; split it")
            try:
                value = json.loads(line)
            except ValueError as error:
                raise RowsError(f"line {number}: not JSON ({error})") from None
            if not isinstance(value, dict):
                raise RowsError(f"line {number}: each line must be a JSON object")
            found.append(
                Row.model_validate(value) if set(value) <= {"item", "sample"} and "item" in value else Row(item=value)
            )
    return found
