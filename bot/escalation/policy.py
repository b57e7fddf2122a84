"""Who is paged at each step of an unacknowledged alert, and when the next step is due.

Pure: no clock, no storage. Steps are counted from the moment paging started, like an
escalation policy in PagerDuty or GoAlert:

    step 0  at 0                        the staff chat and the person on call
    step 1  at ack_timeout              the backup (or everyone, if there is no backup)
    step 2  at everyone_after           the staff chat again and every staff member
    step 3+ every repeat_every after    the same again, until someone acknowledges

After downtime the worker fires only the latest step that has come due (`due_step`), so a
restart never sends a burst of stale repeats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from bot.config import LevelPolicy
from bot.escalation.rota import OnCall

STAFF_CHAT = "staff_chat"
DM_PREFIX = "dm:"
# A safety net for a policy without repeats: an alert nobody has acknowledged is never left
# silent for longer than this.
LAST_RESORT_REPEAT = timedelta(hours=1)


def dm(name: str) -> str:
    return f"{DM_PREFIX}{name}"


def dm_name(recipient: str) -> str | None:
    return recipient[len(DM_PREFIX) :] if recipient.startswith(DM_PREFIX) else None


@dataclass(frozen=True)
class Step:
    number: int
    recipients: tuple[str, ...]


def offset(policy: LevelPolicy, step: int) -> timedelta:
    """When step `step` is due, counted from the start of paging."""
    ack = timedelta(seconds=policy.ack_timeout_seconds)
    if step == 0:
        return timedelta(0)
    if step == 1:
        return ack
    everyone = _everyone_after(policy)
    repeat = _repeat(policy)
    if everyone is not None:
        return everyone + repeat * (step - 2)
    return ack + repeat * (step - 1)


def due_step(policy: LevelPolicy, elapsed: timedelta, fired: int) -> int:
    """The latest step due after `elapsed`, at least `fired` (the next one not yet fired)."""
    step = fired
    while offset(policy, step + 1) <= elapsed:
        step += 1
    return step


def recipients(
    policy: LevelPolicy, step: int, on_call: OnCall, team: Sequence[str]
) -> tuple[str, ...]:
    """Who hears at `step`. `team` is every staff member the bot can message directly."""
    everyone = (STAFF_CHAT, *(dm(name) for name in team))
    if policy.notify == "team":
        return everyone
    if policy.notify == "queue" and step == 0:
        return (STAFF_CHAT,)
    first = [p for p in (on_call.primary, on_call.backup) if p]
    if step == 0:
        return (STAFF_CHAT, dm(first[0])) if first else everyone
    if step == 1:
        if on_call.primary and on_call.backup and on_call.backup != on_call.primary:
            return (dm(on_call.backup),)
        return everyone
    if _everyone_after(policy) is not None:
        return everyone
    return (STAFF_CHAT, *(dm(name) for name in dict.fromkeys(first))) if first else everyone


def _everyone_after(policy: LevelPolicy) -> timedelta | None:
    # LevelPolicy guarantees it comes after ack_timeout.
    if policy.everyone_after_seconds is None:
        return None
    return timedelta(seconds=policy.everyone_after_seconds)


def _repeat(policy: LevelPolicy) -> timedelta:
    if policy.repeat_every_seconds is None:
        return LAST_RESORT_REPEAT
    return timedelta(seconds=policy.repeat_every_seconds)
