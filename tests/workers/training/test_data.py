import pytest
from transformers import AutoTokenizer

from lmtune.training_data import Row
from workers.training.data import IGNORE_INDEX, collate_packed, collate_padded, encode_row, tokenize_rows


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def trained_text(tokenizer, row: Row) -> str:
    input_ids, labels = encode_row(row, tokenizer)
    assert len(input_ids) == len(labels)
    return tokenizer.decode([label for label in labels if label != IGNORE_INDEX])


def test_only_assistant_turns_with_weight_one_carry_loss(tokenizer):
    row = Row(
        1,
        "chat",
        {
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "DRAFT ANSWER", "weight": 0},
                {"role": "user", "content": "second question"},
                {"role": "assistant", "content": "FINAL ANSWER"},
            ]
        },
    )
    assert trained_text(tokenizer, row) == "FINAL ANSWER<|im_end|>\n"


def test_every_weighted_assistant_turn_is_trained(tokenizer):
    row = Row(
        1,
        "chat",
        {
            "messages": [
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "A1"},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "A2"},
            ]
        },
    )
    assert trained_text(tokenizer, row) == "A1<|im_end|>\nA2<|im_end|>\n"


def test_chat_rows_use_the_chat_template(tokenizer):
    row = Row(1, "chat", {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    input_ids, _ = encode_row(row, tokenizer)
    assert tokenizer.decode(input_ids) == "<s><|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"


def test_tokenizer_without_a_template_falls_back_to_chatml(tokenizer):
    bare = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    bare.chat_template = None
    row = Row(1, "chat", {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    assert encode_row(row, bare) == encode_row(row, tokenizer)


def test_prompt_tokens_carry_no_loss_and_the_completion_ends_with_eos(tokenizer):
    row = Row(1, "prompt_completion", {"prompt": "Translate: chat", "completion": " cat"})
    assert trained_text(tokenizer, row) == " cat</s>"


def test_text_rows_train_every_token(tokenizer):
    input_ids, labels = encode_row(Row(1, "text", {"text": "all of it"}), tokenizer)
    assert labels[1:] == input_ids[1:]


def test_long_examples_are_cut_from_the_end_and_counted(tokenizer, caplog):
    rows = [Row(i, "text", {"text": "x" * n}) for i, n in enumerate([5, 50, 80])]
    data = tokenize_rows(rows, tokenizer, max_seq_length=32)
    assert [len(ids) for ids in data.examples["input_ids"]] == [7, 32, 32]
    assert data.truncated == 2
    assert "2 examples were longer than max_seq_length=32" in caplog.text


def test_examples_left_without_targets_are_skipped(tokenizer):
    rows = [Row(1, "prompt_completion", {"prompt": "p" * 40, "completion": "c"}), Row(2, "text", {"text": "ok"})]
    data = tokenize_rows(rows, tokenizer, max_seq_length=16)
    assert len(data) == 1 and data.dropped == 1


def test_packing_restarts_positions_and_masks_each_examples_first_label():
    examples = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]}]
    batch = collate_packed(examples, pad_id=0, max_seq_length=8)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5]]


def test_padding_is_masked_out():
    batch = collate_padded([{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}, {"input_ids": [4], "labels": [4]}], pad_id=0)
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"][1].tolist() == [4, IGNORE_INDEX, IGNORE_INDEX]
