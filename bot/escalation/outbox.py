"""Delivers alerts from the outbox to the staff chat, retrying until each one is through.

The alert row was committed before anything was sent (bot.dialogue.service), so this worker
can crash or be killed at any point: on restart it finds the undelivered rows and sends them.
Immediate alerts go before high ones. Telegram's `retry_after` is honoured; other failures back
off exponentially up to a minute. (The on-call rota, re-escalation timers and de-duplication of a
send that succeeded just before a crash belong to the on-call queue work.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from bot.storage.base import EscalationRow, OutboxItem
from bot.storage.sqlite import SqliteStore

log = logging.getLogger("safeguard.escalation")

MAX_BACKOFF_SECONDS = 60.0


class DeliveryDelayed(Exception):
    """The transport asked us to wait (Telegram 429) before trying again."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after


class StaffNotifier(Protocol):
    async def post_alert(self, escalation: EscalationRow) -> int:
        """Post the alert to the staff chat; return the staff-chat message id."""
        ...


class OutboxWorker:
    def __init__(self, store: SqliteStore, notifier: StaffNotifier, idle_seconds: float = 1.0):
        self.store = store
        self.notifier = notifier
        self.idle_seconds = idle_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Called right after an alert is committed, so it goes out without waiting a tick."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                delivered = await self.deliver_due()
            except Exception as exc:  # the worker must outlive any one failure
                log.error("outbox_cycle_failed error=%s", type(exc).__name__)
                delivered = 0
            if delivered:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.idle_seconds)

    async def deliver_due(self) -> int:
        delivered = 0
        for item in await self.store.due_outbox():
            if await self._deliver(item):
                delivered += 1
        return delivered

    async def _deliver(self, item: OutboxItem) -> bool:
        escalation = await self.store.get_escalation(item.escalation_id)
        try:
            message_id = await self.notifier.post_alert(escalation)
        except DeliveryDelayed as exc:
            await self._failed(item, "retry_after", exc.retry_after)
            return False
        except Exception as exc:
            backoff = min(2.0**item.attempts, MAX_BACKOFF_SECONDS)
            await self._failed(item, type(exc).__name__, backoff)
            return False
        async with self.store.transaction() as tx:
            await tx.outbox_sent(item.id, message_id)
        log.info(
            "alert_delivered case=%s escalation=%s attempts=%s",
            item.case_ref,
            item.escalation_id,
            item.attempts + 1,
        )
        return True

    async def _failed(self, item: OutboxItem, error: str, retry_in: float) -> None:
        log.warning(
            "alert_delivery_failed case=%s escalation=%s error=%s retry_in=%.1f",
            item.case_ref,
            item.escalation_id,
            error,
            retry_in,
        )
        async with self.store.transaction() as tx:
            await tx.outbox_failed(item.id, error, retry_in)
