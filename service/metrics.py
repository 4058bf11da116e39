"""GET /metrics in Prometheus' text format, for operators (docs/operations.md).

Two kinds of figures. Counted in this API process: requests by route template and status, their
latency (to the response's first byte, so a stream counts its start), and what the model server's
answers cost (queue wait, load time). Prometheus scrapes each API process as its own target and
sums them. Read from the database at scrape time (lmtune/store/overview.py): jobs, queues, workers,
attempts, running jobs' speed, webhook deliveries; every API process answers these alike, so take
one target's value (max), never their sum.

/metrics is off unless LMTUNE_METRICS_TOKEN is set, and then wants `Authorization: Bearer <it>`.
"""

from __future__ import annotations

import hmac
import time

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmtune.errors import RequestError
from lmtune.store.database import Database
from lmtune.store.overview import overview

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SERVER_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ApiMetrics:
    """This process's counters, in a registry of the app's own (several apps may share a process)."""

    def __init__(self, db: Database):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "lmtune_http_requests", "API requests answered", ("method", "route", "status"), registry=self.registry
        )
        self.latency = Histogram(
            "lmtune_http_request_duration_seconds",
            "From a request's arrival to its response's start",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.server_queue = Histogram(
            "lmtune_model_server_queue_seconds",
            "How long a completion waited in the model server's queue",
            buckets=SERVER_BUCKETS,
            registry=self.registry,
        )
        self.server_load = Histogram(
            "lmtune_model_server_load_seconds",
            "How long the model server took to load the model of a completion (0 when it was loaded)",
            buckets=SERVER_BUCKETS,
            registry=self.registry,
        )
        self.server_busy = Counter(
            "lmtune_model_server_busy_refusals",
            "Completions the model server refused as busy (429)",
            registry=self.registry,
        )
        self.registry.register(StoreCollector(db))

    def observe_model_server(self, start: dict) -> None:
        """The model server's first event of an answer: how long it queued and loaded."""
        self.server_queue.observe(start["queue_seconds"])
        self.server_load.observe(start["load_seconds"])

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StoreCollector:
    """Gauges read from the database when Prometheus scrapes."""

    def __init__(self, db: Database):
        self.db = db

    def describe(self):
        return []  # collected only when scraped: no query at registration

    def collect(self):
        now = time.time()
        seen = overview(self.db, now)
        jobs = GaugeMetricFamily("lmtune_jobs", "Jobs in the store by status and queue", labels=("status", "queue"))
        for (status, queue), count in sorted(seen.jobs.items()):
            jobs.add_metric((status, queue), count)
        depth = GaugeMetricFamily("lmtune_queue_depth", "Jobs waiting in each queue", labels=("queue",))
        wait = GaugeMetricFamily(
            "lmtune_queue_oldest_wait_seconds",
            "How long the oldest queued job of a queue has waited",
            labels=("queue",),
        )
        for queue, created_at in sorted(seen.oldest_queued.items()):
            depth.add_metric((queue,), seen.jobs.get(("queued", queue), 0))
            wait.add_metric((queue,), max(0.0, now - created_at))
        workers = GaugeMetricFamily(
            "lmtune_workers_live", "Workers alive, by the queue they take from", labels=("queue",)
        )
        for queue, count in sorted(seen.live_workers.items()):
            workers.add_metric((queue,), count)
        attempts = _by_queue("lmtune_job_attempts", "Attempts started, over the jobs in the store", seen.attempts)
        failed = _by_queue(
            "lmtune_job_failed_attempts",
            "Attempts that crashed or lost their worker, over the jobs in the store",
            seen.failed_attempts,
        )
        handbacks = _by_queue(
            "lmtune_job_handbacks",
            "Attempts that handed their job back (pause, worker shutdown), over the jobs in the store",
            seen.handbacks,
        )
        steps = GaugeMetricFamily(
            "lmtune_running_job_steps_per_second",
            "Optimizer steps per second of a running job",
            labels=("job", "queue"),
        )
        tokens = GaugeMetricFamily(
            "lmtune_running_job_tokens_per_second",
            "Tokens trained per second of a running job",
            labels=("job", "queue"),
        )
        for job in seen.running:
            if job.steps_per_second is not None:
                steps.add_metric((job.id, job.queue), job.steps_per_second)
            if job.tokens_per_second is not None:
                tokens.add_metric((job.id, job.queue), job.tokens_per_second)
        deliveries = GaugeMetricFamily(
            "lmtune_webhook_deliveries",
            "Webhook deliveries in the outbox by status (retrying: pending after a failed try; failed: given up)",
            labels=("status",),
        )
        for status, count in seen.webhook_deliveries.items():
            deliveries.add_metric((status,), count)
        yield from (jobs, depth, wait, workers, attempts, failed, handbacks, steps, tokens, deliveries)


def _by_queue(name: str, documentation: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=("queue",))
    for queue, value in sorted(values.items()):
        family.add_metric((queue,), value)
    return family


class RequestMetrics:
    """Counts each request under its route template (`/v1/fine_tuning/jobs/{job_id}`, never the id),
    timed to the start of its response. Plain ASGI: a few microseconds a request."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics):
        self.app, self.metrics = app, metrics
        self._series: dict[tuple, tuple] = {}  # bounded: route templates x methods x statuses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        answered = False

        async def sending(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                self._observe(scope, message["status"], time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if not answered:  # no response began (the client left, or an error escaped)
                self._observe(scope, 500, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        template = getattr(scope.get("route"), "path", None) or "unmatched"
        key = (scope["method"], template, status)
        series = self._series.get(key)
        if series is None:  # the labelled children, looked up once per route, method and status
            method = scope["method"]
            series = (
                self.metrics.requests.labels(method, template, str(status)),
                self.metrics.latency.labels(method, template),
            )
            self._series[key] = series
        series[0].inc()
        series[1].observe(seconds)


def install_metrics(app: FastAPI, db: Database, token: str | None) -> ApiMetrics:
    metrics = ApiMetrics(db)
    app.state.metrics = metrics

    @app.get("/metrics", include_in_schema=False)
    async def scrape(request: Request) -> Response:
        if token is None:
            raise HTTPException(404)  # off: answered like any path nothing serves
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise RequestError(
                401, "GET /metrics wants `Authorization: Bearer <LMTUNE_METRICS_TOKEN>`", code="invalid_api_key"
            )
        return Response(await run_in_threadpool(metrics.render), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestMetrics, metrics=metrics)
    return metrics
