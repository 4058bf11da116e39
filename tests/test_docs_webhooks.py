"""The receiver example of docs/webhooks.md, run as written: it verifies what lmtune sends with the
openai SDK, handles a repeated delivery once, and refuses a forged one."""

import asyncio
import re
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

from lmtune.store.webhooks import body_of
from lmtune.webhook_signing import new_secret, signed_headers
from service.webhook_sender import WebhookSender

DOC = Path(__file__).resolve().parents[1] / "docs" / "webhooks.md"


def example_code() -> str:
    text = DOC.read_text()
    after = text.index("<!-- receiver example")
    return re.search(r"```python\n(.*?)```", text[after:], re.DOTALL)[1]


def test_the_documented_receiver_verifies_lmtune_s_deliveries(monkeypatch, capsys):
    secret = new_secret()
    monkeypatch.setenv("LMTUNE_WEBHOOK_SECRET", secret)
    example: dict = {"__name__": "receiver_example"}
    exec(compile(example_code(), str(DOC), "exec"), example)
    server = ThreadingHTTPServer(("127.0.0.1", 0), example["Receiver"])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/lmtune"
    sender = WebhookSender(allow_private=True, timeout=10)
    now = int(time.time())
    body = body_of("evt_1", now, "fine_tuning.job.succeeded", "ftjob-42")

    async def deliver(headers, payload=body):
        return await sender.send(url, headers, payload)

    try:
        headers = signed_headers([secret], "wh_1", now, body)
        first, repeat = asyncio.run(deliver(headers)), asyncio.run(deliver(headers))
        forged = asyncio.run(deliver(headers, body.replace(b"ftjob-42", b"ftjob-43")))
    finally:
        server.shutdown()
    assert (first.status_code, repeat.status_code, forged.status_code) == (204, 204, 400)
    assert capsys.readouterr().out.count("job ftjob-42 succeeded") == 1
