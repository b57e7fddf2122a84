"""The alert outbox: every alert delivered, immediate first, retried after failures."""

from __future__ import annotations

from pathlib import Path

from bot.escalation.outbox import DeliveryDelayed, OutboxWorker
from bot.storage.base import EscalationRow
from bot.storage.sqlite import SqliteStore


class FlakyNotifier:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.posted: list[EscalationRow] = []

    async def post_alert(self, escalation: EscalationRow) -> int:
        if self.failures:
            raise self.failures.pop(0)
        self.posted.append(escalation)
        return 1000 + len(self.posted)


async def _alerts(store: SqliteStore) -> None:
    async with store.transaction() as tx:
        await tx.ensure_case("AAAA-BBBB-CCCC", "p", None)
        await tx.add_escalation("AAAA-BBBB-CCCC", "high", ["answer:danger_now=not_sure"])
        await tx.add_escalation("AAAA-BBBB-CCCC", "immediate", ["rule:danger_now"])


async def test_immediate_alerts_go_first(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path) as store:
        await _alerts(store)
        notifier = FlakyNotifier([])
        assert await OutboxWorker(store, notifier).deliver_due() == 2
        assert [e.level for e in notifier.posted] == ["immediate", "high"]
        assert await store.due_outbox() == []


async def test_failed_delivery_is_kept_and_retried_later(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path) as store:
        await _alerts(store)
        notifier = FlakyNotifier([DeliveryDelayed(0), RuntimeError("HTTP 500")])
        worker = OutboxWorker(store, notifier)
        assert await worker.deliver_due() == 0  # both attempts failed, nothing lost
        due = await store.due_outbox()
        assert len(due) == 1 and due[0].attempts == 1  # the 429 asked for 0 s; 500 backs off
        assert await worker.deliver_due() == 1


async def test_a_new_worker_after_a_crash_finds_undelivered_alerts(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path) as store:
        await _alerts(store)
    async with SqliteStore(tmp_path) as store:
        notifier = FlakyNotifier([])
        assert await OutboxWorker(store, notifier).deliver_due() == 2
