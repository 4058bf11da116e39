"""`lmtune webhooks create|list|delete|test|deliveries`: a key's webhook endpoints on the server
(OpenAI's /v1/webhook_endpoints), and where their deliveries stand."""

from __future__ import annotations

import click

from cli import terminal_views as views
from cli.client_commands import Context, client_command
from lmtune.store.webhooks import EVENT_TYPES  # what lmtune sends (GET /v1/webhook_event_types)

ENDPOINT_COLUMNS: list[views.Column] = [
    ("ID", lambda e: e["id"]),
    ("NAME", lambda e: e["name"]),
    ("URL", lambda e: e["url"]),
    ("EVENTS", lambda e: ", ".join(e["event_types"])),
    ("CREATED", lambda e: views.when(e["created_at"])),
]
DELIVERY_COLUMNS: list[views.Column] = [
    ("WEBHOOK ID", lambda d: d["id"]),
    ("EVENT", lambda d: d["event_type"]),
    ("OBJECT", lambda d: d["data"]["id"]),
    ("STATUS", lambda d: d["status"]),
    ("TRIES", lambda d: d["attempts"]),
    ("LAST ANSWER", lambda d: d["last_error"] or d["last_status_code"] or ""),
    ("NEXT TRY", lambda d: views.when(d["next_attempt_at"])),
]


@click.group()
def webhooks() -> None:
    """Webhook endpoints: signed notices when your jobs end."""


@client_command(webhooks, "create")
@click.argument("url")
@click.option(
    "--events",
    "event_types",
    multiple=True,
    type=click.Choice(EVENT_TYPES),
    help="An event type to send (repeat it for more); default: all of them.",
)
@click.option("--name", help="Default: the URL's host.")
def webhooks_create(ctx: Context, url: str, event_types: tuple[str, ...], name: str | None) -> None:
    """Send your events to URL; prints the endpoint's id and its signing secret, shown only now."""
    body = {"url": url, "name": name, "event_types": list(event_types) or None}
    endpoint = ctx.client.json("POST", "/webhook_endpoints", json={k: v for k, v in body.items() if v is not None})
    if ctx.as_json:
        ctx.show(endpoint, None)
        return
    ctx.console.print(views.table([endpoint], ENDPOINT_COLUMNS))
    click.echo("signing secret (shown only now; verify deliveries with it, see docs/webhooks.md):", err=True)
    click.echo(endpoint["signing_secret"])


@client_command(webhooks, "list")
def webhooks_list(ctx: Context) -> None:
    """Your webhook endpoints."""
    ctx.show(list(ctx.client.pages("/webhook_endpoints")), lambda rows: views.table(rows, ENDPOINT_COLUMNS))


@client_command(webhooks, "delete")
@click.argument("endpoint_id", metavar="ID")
def webhooks_delete(ctx: Context, endpoint_id: str) -> None:
    """Delete an endpoint; deliveries not yet made to it are dropped."""
    deleted = ctx.client.delete("webhook_endpoints", endpoint_id)
    ctx.show(deleted, lambda d: f"deleted webhook endpoint {d['id']}")


@client_command(webhooks, "test")
@click.argument("endpoint_id", metavar="ID")
@click.option("--event", "event_type", type=click.Choice(EVENT_TYPES), default=EVENT_TYPES[0], show_default=True)
def webhooks_test(ctx: Context, endpoint_id: str, event_type: str) -> None:
    """Send a signed sample event to the endpoint now and show the receiver's answer."""
    result = ctx.client.json("POST", f"/webhook_endpoints/{endpoint_id}/test", json={"event_type": event_type})
    ctx.show(result, lambda r: f"{r['event_type']} sent to {r['webhook_endpoint_id']}: answered {r['status_code']}")


@client_command(webhooks, "deliveries")
@click.argument("endpoint_id", metavar="ID")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
def webhooks_deliveries(ctx: Context, endpoint_id: str, limit: int) -> None:
    """The endpoint's recent deliveries, newest first: tries, the last answer, the next try."""
    rows = ctx.client.json("GET", f"/webhook_endpoints/{endpoint_id}/deliveries", params={"limit": limit})["data"]
    ctx.show(rows, lambda rows: views.table(rows, DELIVERY_COLUMNS))
