"""A client that hangs up in the middle of an upload is logged as a disconnect, not an unhandled
error with a traceback, and leaves no partial file behind."""

import asyncio
import logging

BOUNDARY = b"lmtune-boundary"


def test_a_client_gone_mid_upload_is_logged_as_a_disconnect(api, caplog):
    head = (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b"--"
        + BOUNDARY
        + b'\r\nContent-Disposition: form-data; name="file"; filename="train.jsonl"\r\n\r\n'
        + b'{"prompt": "p", "completion": "c"}\n' * 200
    )
    messages = iter([{"type": "http.request", "body": head, "more_body": True}, {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/files",
        "raw_path": b"/v1/files",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", api.alice["Authorization"].encode()),
            (b"content-type", b"multipart/form-data; boundary=" + BOUNDARY),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    with caplog.at_level(logging.INFO):
        asyncio.run(api.client.app(scope, receive, send))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    assert any("client disconnected while sending POST /v1/files" in r.getMessage() for r in caplog.records)
    assert api.client.get("/v1/files", headers=api.alice).json()["data"] == []
    assert not [p for p in (api.settings.data_dir / "files").rglob("*") if p.is_file()]
