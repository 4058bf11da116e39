"""OpenAI's webhook endpoint objects (`client.webhooks.*`), and lmtune's delivery records."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from lmtune.store.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from lmtune.store.webhooks import EVENT_TYPES

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Url = Annotated[str, Field(min_length=1, max_length=2048)]
HINT_CHARS = 4


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Url = Field(description="Where deliveries go: http(s), a public address unless the server allows private ones")
    name: Name | None = Field(None, description="Default: the URL's host")
    event_types: EventTypes | None = Field(None, description="Default: every type lmtune sends")


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Url | None = None
    name: Name | None = None
    event_types: EventTypes | None = None


class RotateSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keep_old_secret_active_for_24_hours: bool = False


class TestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_type: EventType


class Endpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    created_at: int
    updated_at: int
    name: str
    url: str
    event_types: list[str]
    signing_secret_hint: str

    @classmethod
    def of(cls, row: WebhookEndpoint) -> Endpoint:
        return cls(**_fields(row))


class EndpointWithSecret(Endpoint):
    signing_secret: str = Field(description="Shown only when the endpoint is made and when its secret is rotated")

    @classmethod
    def of(cls, row: WebhookEndpoint) -> EndpointWithSecret:
        return cls(**_fields(row), signing_secret=row.secret)


def _fields(row: WebhookEndpoint) -> dict:
    return {
        "id": row.id,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "name": row.name,
        "url": row.url,
        "event_types": row.event_types,
        "signing_secret_hint": f"{row.secret[: len('whsec_') + HINT_CHARS]}…",
    }


class EndpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Endpoint]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeletedEndpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool = True


class TestResult(BaseModel):
    object: Literal["webhook_endpoint.test"] = "webhook_endpoint.test"
    event_type: str
    status_code: int
    success: Literal[True] = True
    webhook_endpoint_id: str


class EventTypeList(BaseModel):
    object: Literal["list"] = "list"
    data: list[str]


class Delivery(BaseModel):
    """lmtune: one event's delivery to one endpoint, and how its tries went."""

    id: str = Field(description="the webhook-id header, the same on every try")
    object: Literal["webhook_endpoint.delivery"] = "webhook_endpoint.delivery"
    event_id: str
    event_type: str
    data: dict[str, str]
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    created_at: int
    last_attempt_at: int | None
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: int | None = Field(description="while pending: when the next try is due")

    @classmethod
    def of(cls, delivery: WebhookDelivery, event: WebhookEvent) -> Delivery:
        return cls(
            id=delivery.id,
            event_id=event.id,
            event_type=event.type,
            data={"id": event.object_id},
            status=delivery.status,
            attempts=delivery.attempts,
            created_at=delivery.created_at,
            last_attempt_at=delivery.last_attempt_at,
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            next_attempt_at=int(delivery.next_attempt_at) if delivery.status == "pending" else None,
        )
