"""Who is on call now, and firing the paging steps of unacknowledged alerts.

The rota (`rota.py`) says who is scheduled; `/oncall` and `/handover` let a person take the
pager until the rota next changes. The policy (`policy.py`) says who hears at each step. This
module joins them to the database, where every timer lives: a step is recorded together with
the messages it causes, in one transaction, so a restart neither forgets nor repeats it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from bot.config import EscalationSettings, LevelPolicy
from bot.crypto import BotCrypto
from bot.escalation import policy
from bot.escalation.rota import OnCall, Rota
from bot.storage.sqlite import SqliteStore, Tx, iso

log = logging.getLogger("safeguard.escalation")

# When nothing in the rota changes for a week, a taken pager is held this long.
DEFAULT_PAGER_HOLD = timedelta(hours=12)
PRIORITY = {"immediate": 0, "high": 1, "routine": 2}
NOTICE_PRIORITY = 3


class Paging:
    def __init__(
        self,
        settings: EscalationSettings,
        rota: Rota,
        members: Iterable[int],
        crypto: BotCrypto,
    ) -> None:
        self.settings = settings
        self.rota = rota
        self.members = frozenset(members)
        self.crypto = crypto

    # ------------------------------------------------------------------ people
    def policy_for(self, level: str) -> LevelPolicy:
        policy_: LevelPolicy = getattr(self.settings, level)
        return policy_

    def team(self) -> list[str]:
        """Rota names of staff members the bot can message directly."""
        return [name for name, user_id in self.rota.people.items() if user_id in self.members]

    def is_member(self, user_id: int) -> bool:
        return user_id in self.members

    def staff_name(self, user_id: int, fallback: str) -> str:
        """How a staff member appears in the timeline: their rota name, else their Telegram
        first name (never their id)."""
        return self.rota.name_for(user_id) or fallback or "staff"

    def user_id(self, name: str) -> int | None:
        user_id = self.rota.person_id(name)
        return user_id if user_id in self.members else None

    async def on_call(self, store: SqliteStore | Tx, now: datetime) -> OnCall:
        scheduled = self.rota.on_call(now)
        taken = await store.pager()
        if taken is None or taken.until <= iso(now):
            return scheduled
        backup = scheduled.backup if scheduled.backup != taken.name else scheduled.primary
        if backup == taken.name:
            backup = None
        return OnCall(primary=taken.name, backup=backup)

    def pager_until(self, now: datetime) -> datetime:
        """A pager taken now is held until the rota next changes hands."""
        return self.rota.next_change(now) or now + DEFAULT_PAGER_HOLD

    # ------------------------------------------------------------------ new alerts
    def paging_from(self, level: str, now: datetime) -> str | None:
        """When paging for a new alert starts: now, or the start of working hours for a level
        that may wait. None means now."""
        if not self.policy_for(level).wait_for_working_hours or self.rota.is_working_time(now):
            return None
        start = self.rota.next_working_start(now)
        return iso(start) if start is not None else None

    def seal_trigger(self, ref: str, text: str) -> bytes | None:
        """The words that raised an alert, kept (sealed) only if alerts are to show them."""
        if self.settings.alert_text != "full" or not text:
            return None
        return self.crypto.seal_transit(trigger_context(ref), text.encode())

    async def page_now(
        self, tx: Tx, escalation_id: int, ref: str, level: str, now: datetime
    ) -> None:
        """Step 0 of a new alert, in the transaction that raised it: the messages to the staff
        chat and the person on call are on disk the moment the alert is, and the delivery
        worker only has to send them."""
        await self._fire(tx, escalation_id, ref, level, 0, now, now)

    # ------------------------------------------------------------------ timers
    async def fire_due(self, store: SqliteStore, now: datetime) -> int:
        """Fire every paging step that has come due; returns how many fired."""
        fired = 0
        for escalation in await store.due_escalations(iso(now)):
            started = datetime.fromisoformat(escalation.paging_from or escalation.created_at)
            async with store.transaction(urgent=True) as tx:
                fired += await self._fire(
                    tx,
                    escalation.id,
                    escalation.case_ref,
                    escalation.level,
                    escalation.step,
                    started,
                    now,
                )
        return fired

    async def _fire(
        self,
        tx: Tx,
        escalation_id: int,
        ref: str,
        level: str,
        fired_before: int,
        started: datetime,
        now: datetime,
    ) -> int:
        level_policy = self.policy_for(level)
        step = policy.due_step(level_policy, now - started, fired_before)
        on_call = await self.on_call(tx, now)
        recipients = policy.recipients(level_policy, step, on_call, self.team())
        next_at = started + policy.offset(level_policy, step + 1)
        if not await tx.fire_step(
            escalation_id,
            ref,
            fired_before,
            step,
            iso(next_at),
            recipients,
            PRIORITY[level],
            fired_at=iso(now),
        ):
            return 0
        names = ", ".join(policy.dm_name(r) or "staff chat" for r in recipients)
        await tx.add_event(ref, "bot", "paged", f"step {step}: {names}")
        log.warning(
            "alert_paged case=%s escalation=%s step=%s recipients=%s",
            ref,
            escalation_id,
            step,
            len(recipients),
        )
        return 1


def trigger_context(ref: str) -> str:
    return f"trigger:{ref}"


def followup_context(ref: str) -> str:
    return f"followup:{ref}"


def reply_context(ref: str) -> str:
    return f"reply:{ref}"


def utcnow() -> datetime:
    return datetime.now(UTC)
