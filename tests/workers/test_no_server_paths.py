"""Jobs that fail at start, through a real worker and trainer: the code and field to change, and no
server path in the error or in any event."""

import pytest

from lmtune.store import history

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_settings_the_model_cannot_take_fail_at_start_naming_the_field_not_a_path(deployment):
    bad_targets = deployment.submit(lora={"target_modules": ["q_proj", "nope"]})
    too_long = deployment.submit(max_seq_length=4096)
    deployment.start_worker()
    for job, param, words in [
        (
            bad_targets,
            "training.lora.target_modules",
            "['nope'] match no layer of model 'lmtune-tiny'; its linear layers are down_proj",
        ),
        (too_long, "training.max_seq_length", "more than the 2,048 tokens model 'lmtune-tiny' can take"),
    ]:
        failed = deployment.wait_for(job.id, lambda j: j.status in ("failed", "succeeded"), what="an end")
        assert (failed.status, failed.error_code, failed.error_param) == ("failed", "invalid_hyperparameters", param)
        assert words in failed.error_message and failed.attempt == 1
        events = history.events_after_seq(deployment.db, job.id, 0)
        for text in [failed.error_message, *(event.message for event in events)]:
            assert str(deployment.settings.data_dir) not in text and "/tmp" not in text, text
