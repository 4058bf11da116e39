"""A full disk: recognised in whatever error the writer raised (Python's OSError, torch's and
safetensors' own), and told to the user with the space the write needed, in the same words for a
trainer's attempt and an upload."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

DISK_FULL = "disk_full"
# torch's zip writer reports a short write as "unexpected pos"; safetensors and others name ENOSPC
_SIGNS = ("No space left on device", "unexpected pos", "Disk quota exceeded")


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value, unit = size / 1024, "KiB"
    for larger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.1f} {unit}"


def is_disk_full(error: BaseException | None) -> bool:
    """`error`, or an error it was raised from, is a write the disk had no room for."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(sign in str(error) for sign in _SIGNS):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_message(writing: str, needed: int, folder: Path) -> str:
    """What failed, the space it needed and the space there is, and what to do."""
    free = shutil.disk_usage(folder).free
    return (
        f"the disk is full: {writing} needs at least {human_size(needed)} and {human_size(free)} are free "
        "in the data folder; free space there (delete jobs and files no longer needed, or grow the disk)"
    )
