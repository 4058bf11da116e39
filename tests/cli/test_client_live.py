"""The terminal client against a live `lmtune up` (SQLite, embedded broker, a real worker and
trainer), run as a user runs it: `lmtune ...` in a subprocess, with the key `lmtune up` saved."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.client import LmtuneClient
from cli.download import download_folder, folder_path
from cli.local_key import read_local_key
from cli.sample_data import chat_examples, write_jsonl
from tests.deployment import local_service
from tests.waiting import wait_while_progressing, working

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Live:
    root: Path
    data: Path
    env: dict
    base_url: str
    log: Path
    pid: int  # of `lmtune up`

    def lmtune(self, *args: str) -> subprocess.CompletedProcess:
        """`lmtune ARGS`, waited for as long as it, or the server and its trainer, keep working."""
        out, err = self.root / "command.out", self.root / "command.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "cli", *args], env=self.env, cwd=self.root, stdout=stdout, stderr=stderr
            )
            try:
                wait_while_progressing(
                    process.poll,
                    lambda code: code is not None,
                    what=f"the end of `lmtune {' '.join(args)}`",
                    progress=lambda _: (out.stat().st_size, working(process.pid, self.pid)),
                    diagnose=lambda: self.log.read_text()[-3000:],
                )
            finally:
                if process.poll() is None:
                    process.kill()
        return subprocess.CompletedProcess(args, process.returncode, out.read_text(), err.read_text())


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    with local_service(root) as up:
        base_url = f"{up.url}/v1"
        yield Live(root, root / "data", {**up.env, "LMTUNE_BASE_URL": base_url}, base_url, up.log, up.process.pid)


def test_up_prints_the_dashboard_url_with_the_key_it_saved_for_its_owner_only(live):
    match = re.search(r"lmtune: (http://127\.0\.0\.1:\d+/)#key=(lmt-\S+)", live.log.read_text())
    assert match and f"{match.group(1)}v1" == live.base_url
    key_file = live.data / "api-key"
    assert read_local_key(live.data) == match.group(2)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_create_follow_ends_0_and_an_interrupted_download_resumes_verified(live):
    write_jsonl(chat_examples(24, seed=4), live.root / "train.jsonl")
    followed = live.lmtune(
        "jobs",
        "create",
        "--model",
        "lmtune-tiny",
        "--training-file",
        "train.jsonl",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--learning-rate",
        "3e-3",
        "--follow",
    )
    assert followed.returncode == 0, followed.stdout + followed.stderr
    lines = followed.stdout.splitlines()
    job_id = lines[0].split()[0]
    assert "uploaded train.jsonl as file-" in followed.stderr
    assert any(re.search(r"Step 6/6: training loss=\d", line) for line in lines)
    assert lines[-1].startswith("succeeded") and f"lmtune jobs download {job_id}" in lines[-1]

    # interrupted (as by Ctrl-C) in the middle of the weights
    received = []

    def stop_midway(n: int) -> None:
        received.append(n)
        if sum(received) > 200_000:
            raise KeyboardInterrupt

    client = LmtuneClient(live.base_url, read_local_key(live.data))
    with pytest.raises(KeyboardInterrupt):
        download_folder(client, folder_path(job_id, None), live.root / "model", on_bytes=stop_midway)
    assert (live.root / "model" / "model.safetensors.part").exists()

    done = live.lmtune("jobs", "download", job_id, "--output", "model")
    assert done.returncode == 0, done.stderr
    assert "resumed model.safetensors from byte" in done.stderr
    server_manifest = json.loads((live.data / "jobs" / job_id / "final" / "manifest.json").read_text())
    for entry in server_manifest["files"]:
        assert hashlib.sha256((live.root / "model" / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert json.loads((live.root / "model" / "manifest.json").read_text()) == server_manifest

    listed = json.loads(live.lmtune("jobs", "list", "--json").stdout)
    assert [(job["id"], job["status"]) for job in listed] == [(job_id, "succeeded")]


def test_a_revoked_key_gets_401_at_once(live):
    created = live.lmtune("keys", "create", "visitor")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert live.lmtune("models", "list", "--api-key", secret).returncode == 0
    keys = json.loads(live.lmtune("keys", "list", "--json").stdout)
    (visitor,) = [key["id"] for key in keys if key["name"] == "visitor"]

    assert live.lmtune("keys", "revoke", visitor).returncode == 0
    refused = live.lmtune("models", "list", "--api-key", secret)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: invalid API key")
    assert len(refused.stderr.splitlines()) == 1
    assert live.lmtune("models", "list").returncode == 0  # the saved local key still works
