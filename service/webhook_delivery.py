"""`lmtune deliver-webhooks`: the process that sends the outbox's deliveries.

Each turn claims the due deliveries (lmtune/store/webhooks.py: locked rows skipped, so several
deliverers never send one delivery at once), at most LMTUNE_WEBHOOK_CONCURRENCY under way per
endpoint, and sends each in a task of its own: a slow or dead receiver holds only its own
endpoint's slots, never another endpoint, the API or a training job, which all run elsewhere. An
answer is recorded fenced by the try's number; a deliverer that dies mid-try leaves its claim to
lapse, and the delivery is tried again with the same `webhook-id` (at least once, never lost).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable

from lmtune.settings import Settings
from lmtune.store.database import Database, is_unreachable
from lmtune.store.webhooks import Claim, claim_due, prune_events, record_try, retry_at
from lmtune.webhook_signing import signed_headers
from service.webhook_sender import WebhookSender

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0  # how soon a new event is sent, at most
CLAIM_MARGIN_SECONDS = 5  # a claim lasts twice the try's timeout and this much, then another may take it
MAX_CLAIMED = 256  # tries under way at once in one deliverer, over all endpoints
RETENTION_SECONDS = 30 * 86400  # events and their deliveries are kept this long (or the retry horizon + a day)
PRUNE_EVERY_SECONDS = 3600


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        sender: WebhookSender | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.settings, self.db, self.clock = settings, db, clock
        self.sender = sender or WebhookSender(settings.webhook_allow_private, settings.webhook_timeout_seconds)
        self.in_flight: Counter[str] = Counter()  # tries under way, by endpoint
        self._tasks: set[asyncio.Task] = set()
        self._pruned_at = 0.0

    @property
    def horizon_seconds(self) -> float:
        return self.settings.webhook_retry_hours * 3600

    async def run(self, stop: asyncio.Event) -> None:
        """Turn until `stop` is set, then let the tries under way finish (within their timeout)."""
        while not stop.is_set():
            try:
                await self.turn()
            except Exception as error:  # a database blip must not end the deliverer
                if not is_unreachable(error):
                    log.exception("a delivery turn failed")
                else:
                    log.warning("the database is unreachable (%s); trying again", type(error).__name__)
            try:
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)
            except TimeoutError:
                pass
        await self.drain()

    async def turn(self) -> int:
        """Claim what is due and start sending it; how many tries were started."""
        now = self.clock()
        if now - self._pruned_at > PRUNE_EVERY_SECONDS:
            keep = max(RETENTION_SECONDS, self.horizon_seconds + 86400)
            await asyncio.to_thread(prune_events, self.db, int(now - keep))
            self._pruned_at = now
        per_endpoint = self.settings.webhook_concurrency
        free = {endpoint: per_endpoint - busy for endpoint, busy in self.in_flight.items()}
        room = MAX_CLAIMED - sum(self.in_flight.values())
        if room <= 0:
            return 0
        claims = await asyncio.to_thread(
            claim_due,
            self.db,
            now,
            2 * self.settings.webhook_timeout_seconds + CLAIM_MARGIN_SECONDS,
            free,
            per_endpoint,
            room,
        )
        for claim in claims:
            self.in_flight[claim.endpoint_id] += 1
            task = asyncio.create_task(self._try(claim))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claims)

    async def _try(self, claim: Claim) -> None:
        try:
            sent_at = self.clock()
            headers = signed_headers(claim.secrets, claim.delivery_id, int(sent_at), claim.body)
            answer = await self.sender.send(claim.url, headers, claim.body)
            tried_at = self.clock()
            again = (
                None
                if answer.ok
                else retry_at(claim, tried_at, self.settings.webhook_first_retry_seconds, self.horizon_seconds)
            )
            if not answer.ok:
                log.info(
                    "webhook %s (try %d) to %s: %s; %s",
                    claim.delivery_id,
                    claim.attempt,
                    claim.url,
                    answer.error,
                    f"next try in {again - tried_at:.0f} s" if again else "giving up",
                )
            await asyncio.to_thread(record_try, self.db, claim, tried_at, answer.status_code, answer.error, again)
        except Exception:  # its claim lapses and the delivery is tried again
            log.exception("webhook %s: recording try %d failed", claim.delivery_id, claim.attempt)
        finally:
            self.in_flight[claim.endpoint_id] -= 1
            if not self.in_flight[claim.endpoint_id]:
                del self.in_flight[claim.endpoint_id]

    async def drain(self) -> None:
        """Wait for the tries under way."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self.sender.close()


def run_deliverer(settings: Settings, db: Database) -> None:
    """Until SIGTERM or SIGINT; tries under way finish first (at most the webhook timeout)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        deliverer = Deliverer(settings, db)
        log.info("delivering webhooks (at most %d at once per endpoint)", settings.webhook_concurrency)
        try:
            await deliverer.run(stop)
        finally:
            await deliverer.close()

    asyncio.run(main())
