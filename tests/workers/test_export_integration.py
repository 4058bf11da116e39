"""A GGUF export through real Redis, PostgreSQL and an `lmtune worker` process: the worker that
trained the job takes the export from the `exports` queue, writes it beside the job's files, and a
second request finds it written."""

import gguf
import pytest

from lmtune.dispatch import CeleryJobQueue
from lmtune.exports import start_export
from lmtune.layout import DataLayout, read_manifest
from lmtune.store import exports as export_store
from lmtune.store.database import get_owned
from lmtune.store.models import Export
from tests.waiting import wait_while_progressing, working

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


def test_a_worker_exports_a_finished_job_once(deployment):
    job = deployment.submit(examples=16, epochs=1, lora={"r": 4})
    worker = deployment.start_worker()
    done = deployment.wait_for(job.id, lambda j: j.status == "succeeded", what="succeeded")
    queue = CeleryJobQueue(deployment.settings)
    asked = start_export(deployment.settings, deployment.db, queue, done, "gguf", "q8_0", None)
    assert asked.queue == export_store.export_queue(deployment.settings.queue_prefix)
    written = wait_while_progressing(
        lambda: get_owned(deployment.db, Export, asked.id, None),
        lambda row: row.status in ("succeeded", "failed"),
        progress=lambda row: (row.status, row.progress, working(worker.pid)),
        what="the export's end",
        diagnose=deployment.logs,
    )
    assert written.status == "succeeded", written.error_message
    folder = DataLayout(deployment.settings.data_dir).resolve(written.path)
    name = f"{job.id}-final-q8_0.gguf"
    assert set(read_manifest(folder)) == {name, "Modelfile"} and written.bytes >= (folder / name).stat().st_size
    reader = gguf.GGUFReader(folder / name)
    assert reader.get_field("general.name").contents() == f"ft:lmtune-tiny:{job.id}"
    again = start_export(deployment.settings, deployment.db, queue, done, "gguf", "q8_0", None)
    assert (again.id, again.status) == (asked.id, "succeeded")
