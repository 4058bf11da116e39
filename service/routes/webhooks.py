"""/v1/webhook_endpoints: OpenAI's webhook endpoints API (`client.webhooks.*`) over
lmtune/webhook_service.py, plus each endpoint's recent deliveries (lmtune). An endpoint belongs to
the key that made it and is sent only that key's events; another key's endpoint is a 404. The same
routes answer under /v1/webhooks, lmtune's name for them before OpenAI's SDK had its own (kept out
of the schema, so that each operation is documented once)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from lmtune import webhook_service
from lmtune.errors import RequestError
from lmtune.store import webhooks as webhook_store
from service.deps import DbDep, OwnerDep, SettingsDep, WebhookSenderDep
from service.errors import documented, not_found
from service.schemas import ListResponse
from service.webhook_schemas import (
    DeletedEndpoint,
    Delivery,
    Endpoint,
    EndpointCreate,
    EndpointList,
    EndpointUpdate,
    EndpointWithSecret,
    EventTypeList,
    RotateSecret,
    TestRequest,
    TestResult,
)

endpoints = APIRouter(tags=["webhooks"])
types_router = APIRouter(tags=["webhooks"])


@endpoints.post("", response_model=EndpointWithSecret, responses=documented(400, 429))
def create_endpoint(body: EndpointCreate, owner: OwnerDep, db: DbDep, settings: SettingsDep) -> EndpointWithSecret:
    """A new endpoint for this key's events; its `signing_secret` is shown now and after a rotation only."""
    row = webhook_service.create_endpoint(settings, db, owner, body.url, name=body.name, event_types=body.event_types)
    return EndpointWithSecret.of(row)


@endpoints.get("", response_model=EndpointList, responses=documented())
def list_endpoints(
    owner: OwnerDep, db: DbDep, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> EndpointList:
    rows, more = webhook_store.list_endpoints(db, owner, after, limit)
    data = [Endpoint.of(row) for row in rows]
    return EndpointList(
        data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None, has_more=more
    )


@endpoints.get("/{endpoint_id}", response_model=Endpoint, responses=documented(404))
def retrieve_endpoint(endpoint_id: str, owner: OwnerDep, db: DbDep) -> Endpoint:
    return Endpoint.of(_owned(db, endpoint_id, owner))


@endpoints.post("/{endpoint_id}", response_model=Endpoint, responses=documented(400, 404))
def update_endpoint(
    endpoint_id: str, body: EndpointUpdate, owner: OwnerDep, db: DbDep, settings: SettingsDep
) -> Endpoint:
    """Change the name, the URL or the complete set of event types."""
    try:
        row = webhook_service.update_endpoint(settings, db, endpoint_id, owner, **body.model_dump(exclude_none=True))
    except LookupError:
        raise not_found("webhook endpoint", endpoint_id) from None
    return Endpoint.of(row)


@endpoints.delete("/{endpoint_id}", response_model=DeletedEndpoint, responses=documented(404))
def delete_endpoint(endpoint_id: str, owner: OwnerDep, db: DbDep) -> DeletedEndpoint:
    """The endpoint and its deliveries; those not yet sent never are."""
    try:
        webhook_service.delete_endpoint(db, endpoint_id, owner)
    except LookupError:
        raise not_found("webhook endpoint", endpoint_id) from None
    return DeletedEndpoint(id=endpoint_id)


@endpoints.post("/{endpoint_id}/rotate_secret", response_model=EndpointWithSecret, responses=documented(404))
def rotate_secret(endpoint_id: str, owner: OwnerDep, db: DbDep, body: RotateSecret | None = None) -> EndpointWithSecret:
    """A new signing secret; with `keep_old_secret_active_for_24_hours`, deliveries carry a signature
    by each secret for 24 hours, so a receiver can switch when it likes."""
    keep = bool(body and body.keep_old_secret_active_for_24_hours)
    try:
        row = webhook_service.rotate_secret(db, endpoint_id, owner, keep_old=keep)
    except LookupError:
        raise not_found("webhook endpoint", endpoint_id) from None
    return EndpointWithSecret.of(row)


@endpoints.post("/{endpoint_id}/test", response_model=TestResult, responses=documented(400, 404))
async def test_endpoint(
    endpoint_id: str, body: TestRequest, owner: OwnerDep, db: DbDep, sender: WebhookSenderDep
) -> TestResult:
    """Send a sample event of `event_type` now, signed as a real one (its `data.id` names no real
    object), and answer with the receiver's status code; 400 if no answer came."""
    row = await run_in_threadpool(_owned, db, endpoint_id, owner)
    payload, headers = webhook_service.sample_event(row, body.event_type)
    answer = await sender.send(row.url, headers, payload)
    if answer.status_code is None:
        raise RequestError(
            400, f"the test event was not delivered to {row.url}: {answer.error}", code="webhook_unreachable"
        )
    return TestResult(event_type=body.event_type, status_code=answer.status_code, webhook_endpoint_id=row.id)


@endpoints.get("/{endpoint_id}/deliveries", response_model=ListResponse[Delivery], responses=documented(404))
def list_deliveries(
    endpoint_id: str, owner: OwnerDep, db: DbDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> ListResponse[Delivery]:
    """lmtune: the endpoint's most recent deliveries, newest first, with how their tries went."""
    _owned(db, endpoint_id, owner)
    rows = webhook_store.recent_deliveries(db, endpoint_id, limit)
    return ListResponse(data=[Delivery.of(delivery, event) for delivery, event in rows])


@types_router.get("/v1/webhook_event_types", response_model=EventTypeList, responses=documented())
def list_event_types(owner: OwnerDep) -> EventTypeList:
    """The event types lmtune sends (OpenAI has more)."""
    return EventTypeList(data=list(webhook_store.EVENT_TYPES))


def _owned(db, endpoint_id: str, owner: str):
    row = webhook_store.get_endpoint(db, endpoint_id, owner)
    if row is None:
        raise not_found("webhook endpoint", endpoint_id)
    return row


router = APIRouter()
router.include_router(endpoints, prefix="/v1/webhook_endpoints")
router.include_router(endpoints, prefix="/v1/webhooks", include_in_schema=False)
