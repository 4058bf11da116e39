"""A client that hangs up in the middle of an upload is logged as a disconnect, not an unhandled
error with a traceback, and leaves no partial file behind."""

import asyncio
import logging

from tests.service.conftest import asgi_request

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

    content_type = (b"content-type", b"multipart/form-data; boundary=" + BOUNDARY)
    scope = asgi_request(api, "POST", "/v1/files", [content_type])
    with caplog.at_level(logging.INFO):
        asyncio.run(api.client.app(scope, receive, send))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    assert any("client disconnected while sending POST /v1/files" in r.getMessage() for r in caplog.records)
    assert api.client.get("/v1/files", headers=api.alice).json()["data"] == []
    assert not [p for p in (api.settings.data_dir / "files").rglob("*") if p.is_file()]
