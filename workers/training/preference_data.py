"""Preference rows tokenised into pairs, and pairs collated into the batches DPO's loss reads.

A pair is the prompt's tokens (the input rendered with the model's chat template, the assistant's
turn opened) and each output's tokens (that turn: content or tool calls, and the end-of-turn
marker), the parts tokenised apart as the supervised path does. A pair longer than max_seq_length is
cut from the end (TRL's "keep_start"); one whose prompt leaves no completion token is skipped.

A batch of B pairs has 2B sequences: the chosen ones first, then the rejected ones, each labelled on
its completion only, with `sequence_index` saying whose each label is (workers/training/dpo_loss.py),
packed several a row, with positions restarting at each.
"""

from __future__ import annotations

import json
import logging

import datasets
import torch

from lmtune.preference_rows import check_preference_row
from lmtune.tool_calls import Conversation
from lmtune.training_data import Row
from workers.models.chat_format import conversation_turns, turn_segments
from workers.training.data import IGNORE_INDEX, TokenizedData, pack

log = logging.getLogger(__name__)


def tokenize_pairs(rows: list[Row], tokenizer, max_seq_length: int) -> TokenizedData:
    """Columns prompt_ids, chosen_ids, rejected_ids; each completion already cut to fit."""
    table = datasets.Dataset.from_dict({"row": [json.dumps(row.data) for row in rows]})
    datasets.disable_progress_bars()

    def encode(item: dict) -> dict:
        prompt, chosen, rejected = encode_pair(json.loads(item["row"]), tokenizer)
        room = max_seq_length - len(prompt)
        return {
            "prompt_ids": prompt,
            "chosen_ids": chosen[: max(room, 0)],
            "rejected_ids": rejected[: max(room, 0)],
            "truncated": len(prompt) + max(len(chosen), len(rejected)) > max_seq_length,
            "has_target": room > 0,
        }

    encoded = table.map(encode, remove_columns=["row"])
    truncated = sum(encoded["truncated"])
    kept = encoded.filter(lambda item: item["has_target"])
    dropped = len(encoded) - len(kept)
    if truncated:
        log.warning("%d pairs were longer than max_seq_length=%d and were cut from the end", truncated, max_seq_length)
    if dropped:
        log.warning("%d pairs had a prompt of max_seq_length tokens or more and were skipped", dropped)
    return TokenizedData(kept.remove_columns(["truncated", "has_target"]), truncated, dropped)


def encode_pair(data: dict, tokenizer) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen completion, rejected completion) token ids of a checked preference row."""
    pair = check_preference_row(data)
    prompt, chosen = _prompt_and_completion(pair.chosen, tokenizer)
    _, rejected = _prompt_and_completion(pair.rejected, tokenizer)  # the same input: the same prompt
    return prompt, chosen, rejected


def _prompt_and_completion(conversation: Conversation, tokenizer) -> tuple[list[int], list[int]]:
    turns, assistant_turns, tools = conversation_turns(conversation, tokenizer)
    segments = turn_segments(tokenizer, turns, {assistant_turns[-1]: True}, tools)
    prompt: list[int] = []
    for text, target in segments:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if target:
            return prompt, ids  # what the template adds after the answer's end is not part of it
        prompt += ids
    raise AssertionError("the answer is a target segment")


def collate_pairs_packed(pairs: list[dict], pad_id: int, max_seq_length: int) -> dict:
    """The sequences packed into rows of at most max_seq_length (workers/training/data.py `pack`);
    `sequence_index` says whose each position is, chosen sequences numbered first."""
    sequences = [
        {"input_ids": p["prompt_ids"] + p[side], "labels": [IGNORE_INDEX] * len(p["prompt_ids"]) + p[side]}
        for side in ("chosen_ids", "rejected_ids")
        for p in pairs
    ]
    batch, placed = pack(sequences, pad_id, max_seq_length)
    index = torch.full_like(batch["input_ids"], -1)
    for number, (sequence, (row, start)) in enumerate(zip(sequences, placed, strict=True)):
        index[row, start : start + len(sequence["input_ids"])] = number
    return {**batch, "sequence_index": index, "sequences": len(sequences)}
