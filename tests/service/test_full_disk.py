"""An upload that the data folder's disk cannot hold: 507 with the space needed, nothing left behind."""

from tests.helpers import small_disk
from tests.service.conftest import GOOD_FILE, jsonl


def test_an_upload_to_a_full_disk_is_refused_with_the_space_it_needs_and_leaves_no_partial_file(make_api):
    api = make_api(max_upload_bytes=8 * 2**20)
    files = api.settings.data_dir / "files"
    big = jsonl([{"messages": [{"role": "user", "content": "x" * 1000}, {"role": "assistant", "content": "y"}]}] * 3000)
    with small_disk(files, "1m"):
        answer = api.upload(api.alice, big)
        assert answer.status_code == 507, answer.text
        error = answer.json()["error"]
        assert error["code"] == "disk_full" and error["type"] == "server_error"
        assert error["message"].startswith("the disk is full: storing this upload needs at least ")
        assert "MiB and " in error["message"] and "free in the data folder" in error["message"]
        assert list(files.iterdir()) == []  # the partial upload is gone: the space is free again
        assert api.upload(api.alice, GOOD_FILE).status_code == 200  # what fits is stored
