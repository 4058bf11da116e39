"""One turn of a worker on the exports queue: claim the next export, write it, record the end.

Claimed, leased and fenced as a job is (lmtune.store.leases). The export is written in a
`.partial-*` folder of the run folder's `exports/` (a LoRA checkpoint is merged into its base there
first), given a manifest, then renamed into place whole, so a crash never leaves a half-written
export that looks complete; the next attempt starts over. torch is imported only here, on the worker.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from lmtune.errors import RequestError
from lmtune.exports import FINAL, check_room, export_folder_name
from lmtune.layout import DataLayout, read_manifest, write_manifest
from lmtune.model_refs import ModelNotFound, job_output
from lmtune.problems import replace_paths
from lmtune.quotas import folder_bytes
from lmtune.store import exports as export_store
from lmtune.store.jobs import record_output_bytes
from lmtune.store.leases import StaleAttempt
from lmtune.store.models import Export
from workers.job_runner import WorkerContext
from workers.lease_keeper import LeaseKeeper
from workers.model_sources import loadable_source
from workers.models.errors import ReportedError
from workers.training.checkpoints import partial_folder, publish

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 1.0  # at most one progress write per second
MODELFILE = "Modelfile"


def run_next_export(ctx: WorkerContext, queue: str) -> None:
    """Woken by a message of the exports queue: write the export that is next there, if any is left."""
    if ctx.shutting_down.is_set():
        return
    claimed = export_store.claim_next_export(
        ctx.db, queue, ctx.worker_id, ctx.settings.lease_seconds, ctx.settings.max_attempts
    )
    if claimed is None:
        return
    export, attempt = claimed
    with LeaseKeeper(ctx.db, export.id, attempt, ctx.settings.lease_seconds, beat=export_store.heartbeat) as lease:
        try:
            check_room(ctx.settings, ctx.db, export.owner, export.job_id, export.step, export.quantization)
            folder = _write(ctx, export, attempt, lease)
            export_store.finish_export(
                ctx.db,
                export.id,
                attempt,
                export_store.SUCCEEDED,
                path=DataLayout(ctx.settings.data_dir).relative(folder),
                bytes=sum(entry["bytes"] for entry in read_manifest(folder).values()),  # what a download fetches
                progress=1.0,
            )
            # the export is in the job's run folder: it counts in the key's storage quota with it
            run = DataLayout(ctx.settings.data_dir).job(export.job_id).root
            record_output_bytes(ctx.db, export.job_id, folder_bytes(run))
        except StaleAttempt:
            log.warning("attempt %d of export %s was superseded (or its job deleted); stopped", attempt, export.id)
        except (ReportedError, ModelNotFound) as error:
            code = getattr(error, "code", "model_not_found")
            _end(ctx, export, attempt, error_code=code, error_message=str(error)[:2000])
        except RequestError as refused:  # past the key's storage quota, with what landed since it was asked
            _end(ctx, export, attempt, error_code=refused.code, error_message=refused.message)
        except Exception as error:  # a fault of the worker, not of the export: try again
            log.exception("attempt %d of export %s failed", attempt, export.id)
            reason = replace_paths(str(error), {str(ctx.settings.data_dir): "<data folder>"})[:500]
            try:
                export_store.fail_attempt(
                    ctx.db, export.id, attempt, f"{type(error).__name__}: {reason}", ctx.settings.max_attempts
                )
            except StaleAttempt:
                pass


def _end(ctx: WorkerContext, export: Export, attempt: int, **fields) -> None:
    try:
        export_store.finish_export(ctx.db, export.id, attempt, export_store.FAILED, **fields)
    except StaleAttempt:
        pass


def _write(ctx: WorkerContext, export: Export, attempt: int, lease: LeaseKeeper) -> Path:
    from transformers import AutoTokenizer  # torch: only on the worker, once an export runs

    from workers.models.gguf_export import write_gguf
    from workers.models.ollama_modelfile import modelfile

    data = DataLayout(ctx.settings.data_dir)
    ref = job_output(ctx.db, data, export.job_id, export.owner, None if export.source == FINAL else export.step)
    exports = data.job(export.job_id).exports
    name = export_folder_name(export.source, export.format, export.quantization)
    for lost in exports.glob(f"{partial_folder(exports, name).name}-*"):  # what lost attempts left
        shutil.rmtree(lost, ignore_errors=True)
    partial = partial_folder(exports, f"{name}-{attempt}")
    partial.mkdir(parents=True)
    try:
        merged = partial / "merged"  # a LoRA checkpoint holds only its adapter
        source = Path(loadable_source(ref, merged))
        gguf_name = f"{export.job_id}-{export.source}-{export.quantization}.gguf"
        write_gguf(source, partial / gguf_name, export.quantization, ref.id, _progress(ctx, export, attempt, lease))
        (partial / MODELFILE).write_text(modelfile(AutoTokenizer.from_pretrained(source), gguf_name, source))
        shutil.rmtree(merged, ignore_errors=True)
        lease.check()
        write_manifest(partial)
        publish(partial, exports / name)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return exports / name


def _progress(ctx: WorkerContext, export: Export, attempt: int, lease: LeaseKeeper):
    last = [0.0]

    def report(done: int, total: int) -> None:
        lease.check()
        if time.monotonic() - last[0] >= PROGRESS_SECONDS or done == total:
            export_store.record_progress(ctx.db, export.id, attempt, round(done / total, 3))
            last[0] = time.monotonic()

    return report
