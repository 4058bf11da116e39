import os
import tarfile
import tracemalloc

from service.streaming import CHUNK, TarArchive


def test_a_large_folder_streams_as_a_tar_in_bounded_memory(tmp_path):
    source = tmp_path / "checkpoint"
    source.mkdir()
    (source / "model.safetensors").write_bytes(os.urandom(1 << 20) * 48 + b"x")  # 48 MiB, not whole blocks
    (source / "config.json").write_text("{}")

    tracemalloc.start()
    archive = TarArchive(source, ["config.json", "model.safetensors"], "ckpt")
    with (tmp_path / "received.tar").open("wb") as received:
        for chunk in archive:
            assert len(chunk) <= CHUNK
            received.write(chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert peak < 3 * CHUNK < (source / "model.safetensors").stat().st_size  # a chunk or two, never the file
    assert (tmp_path / "received.tar").stat().st_size == archive.size  # the Content-Length sent before it
    with tarfile.open(tmp_path / "received.tar") as tar:
        assert tar.getnames() == ["ckpt/config.json", "ckpt/model.safetensors"]
        assert tar.extractfile("ckpt/model.safetensors").read() == (source / "model.safetensors").read_bytes()
