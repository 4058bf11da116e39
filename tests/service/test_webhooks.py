"""Webhooks as a client and a receiver see them: OpenAI's /v1/webhook_endpoints (with the SDK),
signatures both the openai SDK and standardwebhooks verify, delivery with one webhook-id across
retries, one endpoint's dead receiver never holding up another, and targets guarded."""

import asyncio
import json
import time

import openai
import pytest
import standardwebhooks

from lmtune.store import webhooks as store
from lmtune.webhook_signing import new_secret, signed_headers
from lmtune.webhook_targets import RefusedTarget, check_address, check_url
from service.webhook_delivery import Deliverer
from service.webhook_sender import WebhookSender
from tests.service.conftest import GOOD_FILE
from tests.webhook_receiver import Receiver


@pytest.fixture
def receiver():
    made = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for running in made:
        running.close()


def sdk(api, headers) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=str(api.client.base_url) + "/v1",
        api_key=headers["Authorization"].split()[1],
        http_client=api.client,
        max_retries=0,
    )


def verify_both(secret: str, received) -> dict:
    """The body, once the openai SDK and the standardwebhooks library have both verified it."""
    event = openai.OpenAI(api_key="unused").webhooks.unwrap(received.body, received.headers, secret=secret)
    assert standardwebhooks.Webhook(secret).verify(received.body, received.headers) == json.loads(received.body)
    return event


def test_a_signed_body_verifies_with_the_openai_sdk_and_standardwebhooks():
    secret = new_secret()
    body = store.body_of("evt_1", int(time.time()), "fine_tuning.job.succeeded", "ftjob-1")
    headers = signed_headers([secret], "wh_1", int(time.time()), body)
    event = openai.OpenAI(api_key="unused").webhooks.unwrap(body, headers, secret=secret)
    assert event.type == "fine_tuning.job.succeeded" and event.data.id == "ftjob-1" and event.id == "evt_1"
    assert standardwebhooks.Webhook(secret).verify(body, headers)["data"] == {"id": "ftjob-1"}
    tampered = body.replace(b"ftjob-1", b"ftjob-2")
    with pytest.raises(openai.InvalidWebhookSignatureError):
        openai.OpenAI(api_key="unused").webhooks.unwrap(tampered, headers, secret=secret)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(tampered, headers)
    with pytest.raises(openai.InvalidWebhookSignatureError):  # another endpoint's secret
        openai.OpenAI(api_key="unused").webhooks.unwrap(body, headers, secret=new_secret())


def test_endpoints_through_the_openai_sdk(make_api):
    api = make_api(webhook_allow_private=True)
    client = sdk(api, api.alice)
    made = client.webhooks.create(
        url="https://hooks.example.com/lmtune", name="ci", event_types=["fine_tuning.job.succeeded"]
    )
    assert made.signing_secret.startswith("whsec_") and made.object == "webhook_endpoint"
    assert made.event_types == ["fine_tuning.job.succeeded"]
    assert made.signing_secret_hint == made.signing_secret[:10] + "…"
    fetched = client.webhooks.retrieve(made.id)
    assert fetched.url == made.url and "signing_secret" not in fetched.model_dump()
    updated = client.webhooks.update(made.id, event_types=["fine_tuning.job.failed", "fine_tuning.job.cancelled"])
    assert updated.event_types == ["fine_tuning.job.cancelled", "fine_tuning.job.failed"]
    assert [e.id for e in client.webhooks.list()] == [made.id]
    rotated = client.webhooks.rotate_secret(made.id)
    assert rotated.signing_secret not in (None, made.signing_secret)
    assert "fine_tuning.job.failed" in client.webhooks.event_types.list().data
    assert client.webhooks.delete(made.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.webhooks.retrieve(made.id)


def test_another_keys_endpoint_is_a_404_everywhere(api):
    made = api.client.post("/v1/webhook_endpoints", headers=api.alice, json={"url": "https://a.example/h"}).json()
    for method, path, body in (
        ("GET", f"/v1/webhook_endpoints/{made['id']}", None),
        ("POST", f"/v1/webhook_endpoints/{made['id']}", {"name": "mine"}),
        ("DELETE", f"/v1/webhook_endpoints/{made['id']}", None),
        ("POST", f"/v1/webhook_endpoints/{made['id']}/rotate_secret", {}),
        ("POST", f"/v1/webhook_endpoints/{made['id']}/test", {"event_type": "fine_tuning.job.failed"}),
        ("GET", f"/v1/webhook_endpoints/{made['id']}/deliveries", None),
    ):
        answer = api.client.request(method, path, headers=api.bob, json=body)
        assert answer.status_code == 404, (method, path)
        assert answer.json()["error"]["code"] == "webhook_endpoint_not_found"
    assert api.client.get("/v1/webhook_endpoints", headers=api.bob).json()["data"] == []


def test_the_same_endpoints_answer_under_v1_webhooks(api):
    made = api.client.post("/v1/webhooks", headers=api.alice, json={"url": "https://a.example/h"}).json()
    assert made["signing_secret"].startswith("whsec_")
    assert [e["id"] for e in api.client.get("/v1/webhook_endpoints", headers=api.alice).json()["data"]] == [made["id"]]
    assert api.client.delete(f"/v1/webhooks/{made['id']}", headers=api.alice).json()["deleted"]
    assert api.client.get(f"/v1/webhook_endpoints/{made['id']}", headers=api.alice).status_code == 404
    assert not any(path.startswith("/v1/webhooks") for path in api.client.get("/openapi.json").json()["paths"])


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("https://localhost/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "private"),  # the cloud metadata address
        ("http://[::ffff:192.168.0.1]/", "private"),
        ("ftp://example.com/hook", "http:// or https://"),
        ("https://user:pw@example.com/hook", "user name or password"),
    ],
)
def test_private_and_odd_targets_are_refused_at_create(api, url, words):
    answer = api.client.post("/v1/webhook_endpoints", headers=api.alice, json={"url": url})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "url" and words in answer.json()["error"]["message"]


def test_event_types_lmtune_never_sends_are_refused(api):
    answer = api.client.post(
        "/v1/webhook_endpoints",
        headers=api.alice,
        json={"url": "https://a.example/", "event_types": ["batch.completed"]},
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "event_types.0"
    assert "fine_tuning.job.succeeded" in answer.json()["error"]["message"]


def test_private_targets_are_allowed_when_the_setting_says_so(make_api):
    api = make_api(webhook_allow_private=True)
    answer = api.client.post("/v1/webhook_endpoints", headers=api.alice, json={"url": "http://127.0.0.1:9/h"})
    assert answer.status_code == 200 and answer.json()["name"] == "127.0.0.1"


def test_the_address_is_checked_again_when_connecting():
    """A public-looking name that resolves to loopback (DNS rebinding, or localhost itself) reaches
    nothing: the sender resolves the name and refuses the address before connecting."""
    check_url("http://rebinding.example/hook", allow_private=False)  # a name passes at create
    for address in ("127.0.0.1", "::1", "10.0.0.8", "::ffff:127.0.0.1", "0.0.0.0"):
        with pytest.raises(RefusedTarget):
            check_address(address, allow_private=False)
    check_address("93.184.216.34", allow_private=False)
    sender = WebhookSender(allow_private=False, timeout=5)
    answer = asyncio.run(sender.send("http://localhost:9/hook", {}, b"{}"))
    assert answer.status_code is None and "loopback" in answer.error


def test_test_sends_a_signed_sample_and_answers_the_receivers_status(make_api, receiver):
    api = make_api(webhook_allow_private=True)
    target = receiver(answer=lambda n: 204)
    client = sdk(api, api.alice)
    made = client.webhooks.create(url=target.url, name="t", event_types=["fine_tuning.job.succeeded"])
    result = client.webhooks.test(made.id, event_type="fine_tuning.job.failed")
    assert result.status_code == 204 and result.webhook_endpoint_id == made.id and result.success
    event = verify_both(made.signing_secret, target.received[0])
    assert event.type == "fine_tuning.job.failed"
    dead = client.webhooks.create(url="http://127.0.0.1:9/nothing", name="d", event_types=["fine_tuning.job.failed"])
    with pytest.raises(openai.BadRequestError) as refused:
        client.webhooks.test(dead.id, event_type="fine_tuning.job.failed")
    assert "cannot connect" in refused.value.message


def run_turns(deliverer: Deliverer, until, turns: int = 400) -> None:
    async def go():
        for _ in range(turns):
            await deliverer.turn()
            if until():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the deliveries never got there")
        await asyncio.sleep(0)  # let finished tries record their answers

    asyncio.run(go())


def end_job(api, owner_headers) -> str:
    file_id = api.upload(owner_headers, GOOD_FILE).json()["id"]
    job = api.client.post(
        "/v1/fine_tuning/jobs", headers=owner_headers, json={"model": "lmtune-tiny", "training_file": file_id}
    ).json()
    api.client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=owner_headers)
    return job["id"]


def test_a_cancelled_job_reaches_its_keys_receiver_signed(make_api, receiver):
    api = make_api(webhook_allow_private=True)
    alices, bobs = receiver(), receiver()
    alice = sdk(api, api.alice).webhooks.create(url=alices.url, name="a", event_types=["fine_tuning.job.cancelled"])
    sdk(api, api.bob).webhooks.create(url=bobs.url, name="b", event_types=["fine_tuning.job.cancelled"])
    job_id = end_job(api, api.alice)
    deliverer = Deliverer(api.settings, api.client.app.state.db)
    run_turns(deliverer, lambda: alices.received)
    event = verify_both(alice.signing_secret, alices.received[0])
    assert event.type == "fine_tuning.job.cancelled" and event.data.id == job_id
    assert bobs.received == []  # another key's endpoint hears nothing of alice's jobs
    [delivery] = api.client.get(f"/v1/webhook_endpoints/{alice.id}/deliveries", headers=api.alice).json()["data"]
    assert delivery["status"] == "succeeded" and delivery["id"] == alices.received[0].headers["webhook-id"]
    assert delivery["data"] == {"id": job_id} and delivery["attempts"] == 1 and delivery["last_status_code"] == 200


def test_a_failing_receiver_gets_the_same_webhook_id_until_it_answers(make_api, receiver):
    api = make_api(webhook_allow_private=True, webhook_first_retry_seconds=0.1)
    flaky = receiver(answer=lambda n: [500, 302, 200][min(n, 2)])
    made = sdk(api, api.alice).webhooks.create(url=flaky.url, name="f", event_types=["fine_tuning.job.cancelled"])
    end_job(api, api.alice)
    run_turns(Deliverer(api.settings, api.client.app.state.db), lambda: len(flaky.received) == 3)
    assert len({r.headers["webhook-id"] for r in flaky.received}) == 1
    assert len({r.body for r in flaky.received}) == 1
    assert flaky.received[2].path == "/hook"  # the redirect was not followed
    for received in flaky.received:
        verify_both(made.signing_secret, received)
    [delivery] = store.recent_deliveries(api.client.app.state.db, made.id, 5)
    assert delivery[0].status == "succeeded" and delivery[0].attempts == 3


def test_a_receiver_that_never_answers_holds_up_no_other_endpoint(make_api, receiver):
    api = make_api(webhook_allow_private=True, webhook_timeout_seconds=30, webhook_concurrency=1)
    stuck, healthy = receiver(answer=lambda n: None), receiver()
    for target in (stuck, healthy):
        sdk(api, api.alice).webhooks.create(url=target.url, name="x", event_types=["fine_tuning.job.cancelled"])
    started = time.monotonic()
    jobs = [end_job(api, api.alice) for _ in range(3)]
    run_turns(Deliverer(api.settings, api.client.app.state.db), lambda: len(healthy.received) == 3)
    assert time.monotonic() - started < 30  # well within the stuck receiver's timeout
    assert sorted(json.loads(r.body)["data"]["id"] for r in healthy.received) == sorted(jobs)
    assert len(stuck.received) == 1  # one try at a time to the stuck endpoint (its concurrency)


def test_a_deleted_endpoint_gets_nothing_more(make_api, receiver):
    api = make_api(webhook_allow_private=True)
    target = receiver()
    made = sdk(api, api.alice).webhooks.create(url=target.url, name="x", event_types=["fine_tuning.job.cancelled"])
    end_job(api, api.alice)
    sdk(api, api.alice).webhooks.delete(made.id)
    assert asyncio.run(Deliverer(api.settings, api.client.app.state.db).turn()) == 0
    assert target.received == []
