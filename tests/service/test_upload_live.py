"""A live `lmtune serve` taking a large upload: the API's memory barely grows, other requests are
served meanwhile, and a chunked body past the limit is cut off with nothing left on disk.
The figures for larger files: benchmarks/upload_memory.py (docs/limits.md)."""

import pytest

from benchmarks.upload_memory import MIB, live_server, measure_upload, oversize_chunked, write_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_large_upload_is_validated_as_a_stream_and_an_oversize_one_cut_off(tmp_path):
    with live_server(tmp_path, limit=40 * MIB) as server:
        upload = measure_upload(server, write_dataset(tmp_path / "train.jsonl", 32 * MIB))
        # holding the parsed rows cost about 30x the file (a GiB here); a stream costs one line
        assert upload["growth_mb"] < 100, upload
        assert upload["examples"] > 100_000 and upload["gets"] > 0

        oversize = oversize_chunked(server, factor=3)
        assert oversize["status"] == "413" and '"code":"file_too_large"' in oversize["body"]
        assert oversize["files_left"] == 0
        # taken as it came and refused at the limit (plus what the sockets' buffers held), not read to the end
        assert oversize["sent_mb"] < 1.5 * 40, oversize
