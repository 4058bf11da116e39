"""Tokenising validated rows into (input_ids, labels) and collating them into batches.

Labels are -100 (no loss) everywhere except the target segments: assistant turns with weight 1,
the completion, or all of a text row. An example longer than max_seq_length is cut from the end.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import datasets
import torch

from lmtune.training_data import Row
from workers.models.chat_format import row_segments

IGNORE_INDEX = -100
log = logging.getLogger(__name__)


@dataclass
class TokenizedData:
    examples: datasets.Dataset  # columns: input_ids, labels
    truncated: int  # examples cut to max_seq_length
    dropped: int  # examples left with no target token after the cut

    def __len__(self) -> int:
        return len(self.examples)


def tokenize_rows(rows: list[Row], tokenizer, max_seq_length: int) -> TokenizedData:
    table = datasets.Dataset.from_dict(
        {"shape": [row.shape for row in rows], "row": [json.dumps(row.data) for row in rows]}
    )
    datasets.disable_progress_bars()

    def encode(item: dict) -> dict:
        row = Row(line=0, shape=item["shape"], data=json.loads(item["row"]))
        input_ids, labels = encode_row(row, tokenizer)
        truncated = len(input_ids) > max_seq_length
        input_ids, labels = input_ids[:max_seq_length], labels[:max_seq_length]
        has_target = any(label != IGNORE_INDEX for label in labels[1:])
        return {"input_ids": input_ids, "labels": labels, "truncated": truncated, "has_target": has_target}

    encoded = table.map(encode, remove_columns=["shape", "row"])
    truncated = sum(encoded["truncated"])
    kept = encoded.filter(lambda item: item["has_target"])
    dropped = len(encoded) - len(kept)
    if truncated:
        log.warning(
            "%d examples were longer than max_seq_length=%d and were cut from the end", truncated, max_seq_length
        )
    if dropped:
        log.warning("%d examples had no target token left after the cut and were skipped", dropped)
    return TokenizedData(kept.remove_columns(["truncated", "has_target"]), truncated, dropped)


def encode_row(row: Row, tokenizer) -> tuple[list[int], list[int]]:
    segments, is_document = row_segments(row, tokenizer)
    input_ids: list[int] = []
    labels: list[int] = []
    if not is_document and tokenizer.bos_token_id is not None:
        input_ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
    for text, target in segments:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if target else [IGNORE_INDEX] * len(ids)
    if not is_document and tokenizer.eos_token_id is not None:
        # the model learns to stop after a completion or a document
        input_ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    return input_ids, labels


def collate_padded(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded rows with an attention mask; the usual path."""
    width = max(len(example["input_ids"]) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[i, :n] = torch.tensor(example["input_ids"])
        labels[i, :n] = torch.tensor(example["labels"])
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def collate_packed(examples: list[dict], pad_id: int, max_seq_length: int) -> dict[str, torch.Tensor]:
    """Examples packed into as few rows of at most max_seq_length as first-fit-decreasing finds.

    Positions restart at each example and there is no attention mask, so the model builds a
    block-diagonal causal mask (or a varlen flash-attention call) from position_ids: no token
    attends across an example boundary. The first label of each example is -100, as in the padded
    path, where position 0 is never predicted.
    """
    return pack(examples, pad_id, max_seq_length)[0]


def pack(examples: list[dict], pad_id: int, max_seq_length: int) -> tuple[dict[str, torch.Tensor], list[tuple]]:
    """`collate_packed`'s batch, and where each example went: (row, first position) by example."""
    rows: list[list[int]] = []
    room: list[int] = []
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]), reverse=True)
    for index in order:
        n = len(examples[index]["input_ids"])
        slot = next((i for i, free in enumerate(room) if free >= n), None)
        if slot is None:
            rows.append([])
            room.append(max_seq_length)
            slot = len(rows) - 1
        rows[slot].append(index)
        room[slot] -= n
    width = max(max_seq_length - free for free in room)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    # padding gets positions of its own restarting run, so it forms a separate (ignored) block
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    placed: list[tuple] = [()] * len(examples)
    for r, row in enumerate(rows):
        cursor = 0
        for index in row:
            example = examples[index]
            n = len(example["input_ids"])
            input_ids[r, cursor : cursor + n] = torch.tensor(example["input_ids"])
            labels[r, cursor + 1 : cursor + n] = torch.tensor(example["labels"][1:])
            position_ids[r, cursor : cursor + n] = torch.arange(n)
            placed[index] = (r, cursor)
            cursor += n
        position_ids[r, cursor:] = torch.arange(width - cursor)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}, placed
