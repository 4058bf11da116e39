"""A full disk recognised in what writers raise, and told with the space needed."""

import errno

from lmtune.disk import disk_full_message, is_disk_full


def test_a_full_disk_is_recognised_in_python_s_torch_s_and_safetensors_errors():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as cause:
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0") from cause
    except RuntimeError as torch_error:
        assert is_disk_full(torch_error)
    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 2048 vs 1911"))
    assert is_disk_full(
        Exception('Error while serializing: IoError(Os { code: 28, message: "No space left on device" })')
    )
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("CUDA out of memory"))


def test_the_message_names_the_space_needed_and_the_space_free(tmp_path):
    message = disk_full_message("writing a checkpoint", 5 * 2**20, tmp_path)
    assert message.startswith("the disk is full: writing a checkpoint needs at least 5.0 MiB and ")
    assert "are free in the data folder; free space there" in message
