"""Noticing one sender flooding the bot, without dropping a word of it.

Each sender has a token bucket (a burst, then a steady rate), keyed by their rate-limit
pseudonym: a keyed hash under its own pepper, so these counters can never be joined to a case.
Over the limit a sender is slowed: every message is still read, kept and checked for danger
(ReportingService), but the bot answers once per quiet spell instead of to each, and staff
are told, because a flood can be misuse or a child in crisis. The counters live in memory
only: a restart forgets them, which errs towards answering.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.config import FloodSettings

# Senders idle long enough for a full bucket are forgotten once this many are counted.
_PRUNE_AT = 10_000


@dataclass(frozen=True)
class FloodVerdict:
    slowed: bool = False  # over the limit: answer only when `tell_reporter`
    tell_reporter: bool = False  # first message over the limit in this spell
    tell_staff: bool = False  # staff have not heard about this sender for a while


@dataclass
class _Bucket:
    tokens: float
    at: float
    slowed: bool = False
    staff_told_at: float | None = None


class FloodGuard:
    def __init__(
        self, settings: FloodSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def note(self, sender: str) -> FloodVerdict:
        """Count one message from `sender` (a rate-limit pseudonym)."""
        now = self.clock()
        burst, rate = self.settings.burst, self.settings.per_minute / 60
        bucket = self._buckets.get(sender)
        if bucket is None:
            if len(self._buckets) >= _PRUNE_AT:
                self._prune(now)
            bucket = self._buckets[sender] = _Bucket(tokens=burst, at=now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            # Calm again once they have slowed to the steady rate for a while.
            if bucket.slowed and bucket.tokens >= burst / 2:
                bucket.slowed = False
            return FloodVerdict()
        first = not bucket.slowed
        bucket.slowed = True
        every = self.settings.tell_staff_every_minutes * 60
        tell_staff = bucket.staff_told_at is None or now - bucket.staff_told_at >= every
        if tell_staff:
            bucket.staff_told_at = now
        return FloodVerdict(slowed=True, tell_reporter=first, tell_staff=tell_staff)

    def _prune(self, now: float) -> None:
        rate = self.settings.per_minute / 60
        full = [
            key
            for key, b in self._buckets.items()
            if b.tokens + (now - b.at) * rate >= self.settings.burst and not b.slowed
        ]
        for key in full:
            del self._buckets[key]
