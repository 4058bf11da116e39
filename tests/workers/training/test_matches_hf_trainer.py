"""lmtune's per-step loss against transformers.Trainer on the same model, data and settings."""

import pytest
import torch
from torch.utils.data import SequentialSampler
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

from lmtune.training_data import validate_jsonl_file
from tests.helpers import train_losses
from workers.training.data import collate_padded, tokenize_rows
from workers.training.loop import train


class _Unshuffled(Trainer):
    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)


class _LossRecorder(TrainerCallback):
    def __init__(self):
        self.losses = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


def trainer_losses(tiny_model, train_file, output, *, batch, accumulation, epochs, learning_rate):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    data = tokenize_rows(validate_jsonl_file(train_file), tokenizer, 512).examples
    recorder = _LossRecorder()
    args = TrainingArguments(
        output_dir=str(output),
        per_device_train_batch_size=batch // accumulation,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        weight_decay=0.01,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = _Unshuffled(
        model=AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
        args=args,
        train_dataset=data,
        data_collator=lambda examples: collate_padded(examples, tokenizer.pad_token_id),
        callbacks=[recorder],
    )
    trainer.train()
    return recorder.losses


@pytest.mark.parametrize("accumulation", [1, 2])
def test_per_step_loss_matches_transformers_trainer(make_spec, tiny_model, chat_file, tmp_path, accumulation):
    spec = make_spec(chat_file, batch_size=8, epochs=2, learning_rate=2e-3, weight_decay=0.01,
                     gradient_accumulation_steps=accumulation)
    train(spec, tmp_path / "lmtune")
    ours = train_losses(tmp_path / "lmtune")
    theirs = trainer_losses(tiny_model, chat_file, tmp_path / "hf", batch=8, accumulation=accumulation,
                            epochs=2, learning_rate=2e-3)
    assert len(ours) == len(theirs) == 8
    assert ours == pytest.approx(theirs, rel=1e-3)
    assert ours[-1] < ours[0]  # it trained, so the match is not of two untouched models
