"""A trainer whose run folder's disk fills up while it writes a checkpoint."""

import json
import re

from lmtune.fence import ATTEMPT_ENV, claim_run_folder, read_error_report
from lmtune.layout import RunLayout
from tests.helpers import small_disk
from workers.training.entry import run_trainer


def test_a_full_disk_is_reported_as_disk_full_with_the_space_needed_and_leaves_no_partial_files(
    tmp_path, monkeypatch, make_spec, chat_file
):
    layout = RunLayout(tmp_path / "run")
    spec_path = tmp_path / "job.json"
    spec_path.write_text(make_spec(chat_file, epochs=1, checkpoint_every_steps=2).model_dump_json())
    with small_disk(layout.root, "256k"):  # the metrics fit, a checkpoint of the tiny model (about 2 MiB) does not
        claim_run_folder(layout, 1)
        monkeypatch.setenv(ATTEMPT_ENV, "1")
        assert run_trainer(str(spec_path), str(layout.root)) == 1
        report = read_error_report(layout, 1)
        assert report["code"] == "disk_full", report
        # the half-written checkpoint's space is free again; what a checkpoint needs is more than that
        sizes = re.match(
            r"the disk is full: writing a checkpoint or the model needs at least ([\d.]+) MiB and ([\d.]+) KiB are free",
            report["message"],
        )
        assert sizes and float(sizes[1]) >= 1.0 and float(sizes[2]) > 200, report["message"]
        assert not list(layout.root.rglob(".partial-*"))
        assert [row["step"] for row in map(json.loads, layout.metrics.read_text().splitlines())] == [1, 2]
