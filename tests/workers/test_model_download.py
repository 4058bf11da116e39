"""A catalogue model that is not on this machine is downloaded once from the hub (here a local one over
HTTP, as HF_ENDPOINT names it), its progress shown in /v1/models while it runs; a second process
needing it waits for the first instead of downloading it again; a failed download says why."""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from huggingface_hub import constants

from tests.service.conftest import running_api
from tests.waiting import wait_while_progressing
from workers.model_download import fetch

REPO = "someone/small-model"
COMMIT = "c0ffee" * 6 + "c0ff"
FILES = {"config.json": b'{"architectures": ["LlamaForCausalLM"]}', "model.safetensors": bytes(range(256)) * 4096}


class LocalHub:
    """The hub's few routes a download uses: the repo's revision and file tree, then each file (HEAD
    for its metadata, GET for its bytes). The weights are held back until `release` is set."""

    def __init__(self):
        self.release = threading.Event()
        self.gets: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.answer(self, body=False)

            def do_GET(self):
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, request, body: bool) -> None:
        path = request.path.split("?")[0]
        if path == f"/api/models/{REPO}/revision/main":
            return self.send(request, json.dumps({"id": REPO, "sha": COMMIT}).encode(), body)
        if path == f"/api/models/{REPO}/tree/{COMMIT}":
            tree = [
                {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                for name, data in FILES.items()
            ]
            return self.send(request, json.dumps(tree).encode(), body)
        name = path.removeprefix(f"/{REPO}/resolve/{COMMIT}/")
        if name not in FILES:
            return self.send(request, b'{"error": "Repository not found"}', body, status=404)
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(FILES[name]).hexdigest()}"'}
        if body:
            self.gets.append(name)
        self.send(request, FILES[name], body, headers=headers, slow=name == "model.safetensors")

    def send(self, request, content: bytes, body: bool, status: int = 200, headers=None, slow=False) -> None:
        """`slow`: half the bytes, then one every 0.1 s (the client never times out) until `release`."""
        request.send_response(status)
        for key, value in {**(headers or {}), "Content-Length": str(len(content))}.items():
            request.send_header(key, value)
        request.end_headers()
        sent = len(content) // 2 if slow and body else 0
        request.wfile.write(content[:sent])
        while slow and body and sent < len(content) - 1 and not self.release.wait(0.1):
            request.wfile.write(content[sent : sent + 1])
            request.wfile.flush()
            sent += 1
        if body:
            request.wfile.write(content[sent:])


@pytest.fixture
def hub(tmp_path, monkeypatch):
    local = LocalHub()
    monkeypatch.setenv("HF_ENDPOINT", local.url)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    catalogue = tmp_path / "models.yaml"
    catalogue.write_text(f"models:\n  small-model:\n    source: {REPO}\n  gone-model:\n    source: someone/gone\n")
    monkeypatch.setenv("LMTUNE_MODELS_FILE", str(catalogue))
    yield local
    local.release.set()
    local.server.shutdown()


def listed(api, name: str) -> dict:
    models = api.client.get("/v1/models", headers=api.alice).json()["data"]
    return next(model for model in models if model["id"] == name)


def test_a_download_runs_once_with_its_progress_in_the_models_list(hub, tmp_path):
    with running_api(tmp_path) as api:
        assert listed(api, "small-model") == {**listed(api, "small-model"), "ready": False, "download": None}
        first = threading.Thread(target=fetch, args=(REPO,))
        first.start()
        # the config has arrived, the weights are under way: the list shows how far it is (the total
        # may be known before the config's bytes are counted, so wait for both)
        download = wait_while_progressing(
            lambda: listed(api, "small-model")["download"],
            lambda download: (
                bool(download and download["bytes_total"] and download["bytes_done"]) or not first.is_alive()
            ),
            what="the download's progress in /v1/models",
        )
        assert download["status"] == "downloading" and download["error"] is None
        assert download["bytes_done"] == len(FILES["config.json"])
        assert download["bytes_total"] == sum(len(data) for data in FILES.values())
        assert listed(api, "small-model")["ready"] is False  # the config is in the cache, not the weights
        second = threading.Thread(target=fetch, args=(REPO,))  # another process needing it: waits
        second.start()
        hub.release.set()
        for thread in (first, second):
            thread.join(30)
        assert sorted(hub.gets) == sorted(FILES)  # each file fetched once
        model = listed(api, "small-model")
        assert model["ready"] is True and model["download"] is None


def test_a_failed_download_says_why_in_the_models_list(hub, tmp_path):
    with running_api(tmp_path) as api:
        with pytest.raises(Exception, match="someone/gone"):
            fetch("someone/gone")
        model = listed(api, "gone-model")
        assert model["ready"] is False and model["download"]["status"] == "failed"
        assert "someone/gone" in model["download"]["error"] and "404" in model["download"]["error"]
