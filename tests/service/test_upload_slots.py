"""Upload places are shared fairly between keys: one key trickling many uploads gets 429 for more,
and another key's upload is still taken; past every place, any key's is refused, before its body."""

import asyncio

from service.upload_gate import WAITING_PER_VALIDATION
from tests.service.conftest import GOOD_FILE, asgi_request

BOUNDARY = b"slots-boundary"
CONTENT_TYPE = (b"content-type", b"multipart/form-data; boundary=" + BOUNDARY)
FORM_HEAD = (
    b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
    b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="train.jsonl"\r\n\r\n'
)
WHOLE_FORM = FORM_HEAD + GOOD_FILE + b"\r\n--" + BOUNDARY + b"--\r\n"


async def upload(api, headers: dict, receive) -> tuple[int, dict, bytes]:
    """POST /v1/files driven message by message: (status, headers, body)."""
    scope = asgi_request(api, "POST", "/v1/files", [CONTENT_TYPE])
    key = (b"authorization", headers["Authorization"].encode())
    scope["headers"] = [key if name == b"authorization" else (name, value) for name, value in scope["headers"]]
    sent = []

    async def send(message):
        sent.append(message)

    await api.client.app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body


def whole_body():
    messages = iter([{"type": "http.request", "body": WHOLE_FORM, "more_body": False}])

    async def receive():
        try:
            return next(messages)
        except StopIteration:
            await asyncio.Event().wait()  # the client keeps the connection open

    return receive


def trickled(hang_up: asyncio.Event):
    """A body that sends its first bytes, then nothing more until `hang_up`, then disconnects."""
    messages = iter([{"type": "http.request", "body": FORM_HEAD, "more_body": True}])

    async def receive():
        try:
            return next(messages)
        except StopIteration:
            await hang_up.wait()
            return {"type": "http.disconnect"}

    return receive


async def admitted(api, count: int) -> None:
    """Until `count` uploads hold places (their first bytes arrived, they wait for more)."""
    while api.client.app.state.upload_gate.admission.admitted < count:
        await asyncio.sleep(0.01)


async def answered(uploads: list, count: int) -> list:
    """The answers of the first `count` of these uploads to end."""
    done: set = set()
    while len(done) < count:
        finished, _ = await asyncio.wait([u for u in uploads if u not in done], return_when=asyncio.FIRST_COMPLETED)
        done |= finished
    return [u.result() for u in done]


def test_one_key_trickling_uploads_holds_only_its_share_and_another_key_still_uploads(api):
    validations = api.settings.upload_validations
    places = validations * WAITING_PER_VALIDATION
    share = -(-places // 2)

    async def scenario():
        hang_up = asyncio.Event()
        # alice opens as many trickled uploads as the server has places: past her share, they are refused
        alices = [asyncio.ensure_future(upload(api, api.alice, trickled(hang_up))) for _ in range(places)]
        refused = await asyncio.wait_for(answered(alices, places - share), 30)  # which ones: as the threads ran
        await asyncio.wait_for(admitted(api, share), 30)
        taken = await asyncio.wait_for(upload(api, api.bob, whole_body()), 30)
        bobs = [asyncio.ensure_future(upload(api, api.bob, trickled(hang_up))) for _ in range(places - share)]
        await asyncio.wait_for(admitted(api, places), 30)
        full = await asyncio.wait_for(upload(api, api.bob, whole_body()), 30)
        hang_up.set()
        await asyncio.gather(*alices, *bobs)
        after = await asyncio.wait_for(upload(api, api.alice, whole_body()), 30)
        return refused, taken, full, after

    refused, taken, full, after = asyncio.run(scenario())
    assert len(refused) == places - share
    for status, headers, body in refused:
        assert status == 429 and b'"too_many_uploads"' in body, body
        assert f"this API key already has {share} uploads under way, its share".encode() in body
        assert int(headers["retry-after"]) > 0
    assert taken[0] == 200, taken[2]  # before: 429, alice's trickled uploads held every place
    assert full[0] == 429 and b"is busy" in full[2], full[2]  # every place taken: any key waits
    assert after[0] == 200, after[2]  # the places came back when the trickled uploads ended
    names = [f["filename"] for f in api.client.get("/v1/files", headers=api.alice).json()["data"]]
    assert names == ["train.jsonl"]  # the trickled ones left nothing
