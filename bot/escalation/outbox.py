"""Delivers every message to staff from the `deliveries` table, and runs the timers.

Each cycle: fire paging steps that have come due (`paging.py`), post the daily digest when it
is due, then send what is waiting, most urgent first and the person on call before the group.

Never lose: a row is committed before anything is sent, so a crash or `kill -9` at any point
leaves it to be sent after the restart. Never double: a row is marked sent in the transaction
right after Telegram answers, so only a crash inside that window (the request went out, the
mark did not land) or an answer that never came (a timeout or a reset connection, after
Telegram may have posted it: `DeliveryUncertain`) can repeat a message; the row is then marked
`sending_since`, and the repeat says it may be one (`StaffDesk.render(resent=True)`). Nothing
in the Bot API tells whether such a message landed, so that repeat cannot be avoided without
risking a lost alert.

Telegram's limits: a group takes about 20 messages a minute. The staff chat gets a short burst,
then one message every few seconds (the allowance spread over the minute); alerts due in
between go out combined in one message (each with its own buttons) instead of queueing for
minutes. Direct messages: a burst of three, then one a second per person, combined the same
way. `retry_after` on 429 pauses that chat; other failures back off exponentially to a minute
(15 seconds for alerts: after an outage an alert must not wait a minute more).

After an outage: rows that failed at different moments come due at different moments, so a
chat waits until its most urgent row is due (a routine notice never goes before an alert that
is still backing off), and the first message Telegram accepts ends every other chat's back-off:
Telegram is back, and what waited goes at once, most urgent first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time as monotonic_time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any, Protocol

from bot.escalation.desk import StaffDesk, StaffMessage
from bot.escalation.paging import NOTICE_PRIORITY, Paging, utcnow
from bot.escalation.policy import STAFF_CHAT
from bot.storage.base import DeliveryRow
from bot.storage.sqlite import SqliteStore, iso

log = logging.getLogger("safeguard.escalation")

MAX_BACKOFF_SECONDS = 60.0
# While an alert waits, Telegram is asked again at least this often. One request per chat
# every 15 s is nothing to Telegram.
ALERT_MAX_BACKOFF_SECONDS = 15.0
# A combined message lists each case on a few lines; more than this would not fit one
# Telegram message or be readable on a phone at 3 a.m.
MAX_COMBINED = 25
DM_GAP_SECONDS = 1.0
# Short bursts before the steady pace applies: the first alerts of a burst go out one by one
# at once; after that each message combines what came in since the last.
DM_BURST = 5
STAFF_CHAT_BURST = 10
# Between two messages to one chat even within a burst, so alerts arriving together are
# combined rather than sent one by one.
MIN_GAP_SECONDS = 0.2
SEND_TIMEOUT_SECONDS = 20.0
HEARTBEAT_SECONDS = 10.0
STOP_GRACE_SECONDS = 5.0
DIGEST = "digest"
HEARTBEAT = "heartbeat"


class DeliveryDelayed(Exception):
    """The transport asked us to wait (Telegram 429) before trying again."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after


class RecipientUnreachable(Exception):
    """A staff member the bot cannot message directly (never started it, or blocked it)."""


class DeliveryUncertain(Exception):
    """The request went out but no answer came back (it timed out, or the connection was
    lost): the message may have been posted, so a retry must say it may be a repeat."""


class StaffNotifier(Protocol):
    async def send(self, recipient: str, message: StaffMessage) -> int:
        """Send to 'staff_chat' or 'dm:<name>'; return the message id."""
        ...


class DeliveryWorker:
    def __init__(
        self,
        store: SqliteStore,
        desk: StaffDesk,
        paging: Paging,
        notifier: StaffNotifier,
        *,
        staff_chat_per_minute: int = 18,
        digest_time: time | None = None,
        idle_seconds: float = 0.5,
        dm_gap_seconds: float = DM_GAP_SECONDS,
        min_gap_seconds: float = MIN_GAP_SECONDS,
    ) -> None:
        self.store = store
        self.desk = desk
        self.paging = paging
        self.notifier = notifier
        self.staff_chat_per_minute = staff_chat_per_minute
        self.digest_time = digest_time
        self.idle_seconds = idle_seconds
        self.dm_gap_seconds = dm_gap_seconds
        self._staff_chat_sends: deque[float] = deque()
        # The group's allowance is spread over the minute, not spent in the first second and
        # then silent for 59.
        self.min_gap_seconds = min_gap_seconds
        self._staff_chat_pace = _Pace(
            STAFF_CHAT_BURST, staff_chat_per_minute / 60.0, min_gap_seconds
        )
        self._dm_pace: dict[str, _Pace] = {}
        self._last_heartbeat = 0.0
        self._blocked_until: dict[str, float] = {}
        # Chats whose last send failed (not a 429), and those to try again at once because a
        # send elsewhere has just succeeded.
        self._failing: set[str] = set()
        self._released: set[str] = set()
        self._next_chance = idle_seconds
        self._in_flight: dict[str, asyncio.Task[bool]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        """Called right after an alert is committed, so it goes out without waiting a tick."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="delivery-worker")

    async def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """Finish the sends in flight (a message half-sent would be repeated after the
        restart), then stop; cancel only if that takes longer than `grace_seconds`."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        # The loop first (it may start a last send), then every send in flight.
        await asyncio.wait([self._task], timeout=grace_seconds)
        pending = [t for t in (self._task, *self._in_flight.values()) if not t.done()]
        late: set[asyncio.Task[Any]] = set()
        if pending:
            _, late = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                busy = await self.run_once(wait=False)
            except Exception as exc:  # the worker must outlive any one failure
                log.error("delivery_cycle_failed error=%s", type(exc).__name__)
                busy = 0
            if busy or self._stopping:
                continue
            timeout = min(self.idle_seconds, self._next_chance)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    async def run_once(self, now: datetime | None = None, wait: bool = True) -> int:
        """One cycle; returns how many steps fired and sends started. With `wait`, the
        sends are finished before it returns (tests); the running worker does not wait, so
        a slow or throttled recipient never holds up paging or the others."""
        now = now or utcnow()
        self._next_chance = self.idle_seconds
        # What is already on disk goes first: a new alert's first page is written with it.
        sent = await self.deliver_due(now, wait=wait)
        fired = await self.paging.fire_due(self.store, now)
        if fired:
            sent += await self.deliver_due(now, wait=wait)
        await self._digest_if_due(now)
        await self._heartbeat(now)
        return sent + fired

    # ------------------------------------------------------------------ sending
    async def deliver_due(self, now: datetime | None = None, wait: bool = True) -> int:
        # Who is busy is taken before the read: a send that finishes during the read may not
        # be in it yet, and its rows must not look due again.
        busy = set(self._in_flight)
        now = now or utcnow()
        rows = await self.store.due_deliveries(iso(now))
        if rows:
            # Rows still backing off too: what a chat waits for decides when it may be sent to.
            horizon = now + timedelta(seconds=MAX_BACKOFF_SECONDS + 1)
            due_ids = {r.id for r in rows}
            rows = await self.store.due_deliveries(iso(horizon), limit=200)
        pending: dict[str, list[DeliveryRow]] = {}
        for row in rows:
            if row.recipient not in busy:
                pending.setdefault(row.recipient, []).append(row)
        by_recipient: dict[str, list[DeliveryRow]] = {}
        for recipient, waiting in pending.items():
            if recipient in self._released:
                by_recipient[recipient] = waiting  # Telegram is back: everything, now
            elif waiting[0].id in due_ids:
                # Its most urgent row is due (rows come most urgent first): send what is due.
                by_recipient[recipient] = [r for r in waiting if r.id in due_ids]
        # The person on call first: direct messages before the group, urgent before routine.
        order = sorted(
            by_recipient,
            key=lambda r: (min(x.priority for x in by_recipient[r]), r == STAFF_CHAT),
        )
        started = []
        for recipient in order:
            delay = self._wait_before_sending(recipient)
            if delay > 0:
                # Come back when this recipient may be sent to, not a whole idle tick later.
                self._next_chance = min(self._next_chance, delay)
                continue
            task = asyncio.create_task(self._send(recipient, _batch(by_recipient[recipient])))
            self._in_flight[recipient] = task
            task.add_done_callback(functools.partial(self._sent_one, recipient))
            started.append(task)
        if wait and started:
            await asyncio.gather(*started)
        return len(started)

    def _sent_one(self, recipient: str, _: asyncio.Task[bool]) -> None:
        self._in_flight.pop(recipient, None)
        self._wake.set()  # what waited behind it may go now

    def _wait_before_sending(self, recipient: str) -> float:
        """Seconds until `recipient` may be sent to: Telegram's retry_after, the group's
        allowance for the minute, the pace."""
        clock = monotonic_time.monotonic()
        waits = [self._blocked_until.get(recipient, 0.0) - clock]
        if recipient == STAFF_CHAT:
            window = self._staff_chat_sends
            while window and window[0] <= clock - 60.0:
                window.popleft()
            if len(window) >= self.staff_chat_per_minute:
                waits.append(window[0] + 60.0 - clock)
            waits.append(self._staff_chat_pace.wait(clock))
        else:
            waits.append(self._dm_pace_for(recipient).wait(clock))
        return max(0.0, *waits)

    def _dm_pace_for(self, recipient: str) -> _Pace:
        pace = self._dm_pace.get(recipient)
        if pace is None:
            rate = 1.0 / self.dm_gap_seconds if self.dm_gap_seconds > 0 else float("inf")
            pace = self._dm_pace[recipient] = _Pace(DM_BURST, rate, self.min_gap_seconds)
        return pace

    async def _send(self, recipient: str, rows: list[DeliveryRow]) -> bool:
        try:
            return await self._send_rows(recipient, rows)
        except Exception as exc:  # a storage error here must not kill the worker
            log.error("staff_message_not_recorded error=%s", type(exc).__name__)
            return False

    async def _send_rows(self, recipient: str, rows: list[DeliveryRow]) -> bool:
        async with self.store.transaction(urgent=True) as tx:
            still_due = await tx.deliveries_sending([r.id for r in rows])
        rows = [r for r in rows if r.id in still_due]
        self._released.discard(recipient)
        if not rows:
            return False
        ids = [r.id for r in rows]
        resent = any(r.sending_since is not None for r in rows)
        refs = ",".join(dict.fromkeys(r.case_ref or "-" for r in rows))
        if recipient != STAFF_CHAT:
            self._dm_pace_for(recipient).spend(monotonic_time.monotonic())
        try:
            message = await self.desk.render(rows, resent=resent)
            message_id = await asyncio.wait_for(
                self.notifier.send(recipient, message), SEND_TIMEOUT_SECONDS
            )
        except DeliveryDelayed as exc:
            # Telegram asked this chat to wait: nothing goes to it until then.
            self._blocked_until[recipient] = monotonic_time.monotonic() + exc.retry_after
            await self._failed(ids, refs, "retry_after", exc.retry_after, count=False)
            return False
        except RecipientUnreachable:
            log.warning("staff_unreachable kind=%s case=%s", rows[0].kind, refs)
            async with self.store.transaction(urgent=True) as tx:
                await tx.deliveries_cancelled(ids, "unreachable")
            return False
        except (TimeoutError, DeliveryUncertain) as exc:
            # It may have gone out: keep the rows marked, so a retry says it may repeat.
            self._failing.add(recipient)
            error = "timeout" if isinstance(exc, TimeoutError) else "no_answer"
            await self._failed(ids, refs, error, _backoff(rows), uncertain=True)
            return False
        except Exception as exc:
            self._failing.add(recipient)
            await self._failed(ids, refs, type(exc).__name__, _backoff(rows))
            return False
        self._telegram_is_back(recipient)
        if recipient == STAFF_CHAT:
            # Only what Telegram accepted counts against the group's allowance.
            clock = monotonic_time.monotonic()
            self._staff_chat_sends.append(clock)
            self._staff_chat_pace.spend(clock)
        async with self.store.transaction(urgent=True) as tx:
            await tx.deliveries_sent(ids, message_id)
        log.info(
            "staff_message_delivered kind=%s case=%s rows=%s attempts=%s",
            rows[0].kind,
            refs,
            len(rows),
            max(r.attempts for r in rows) + 1,
        )
        return True

    def _telegram_is_back(self, recipient: str) -> None:
        """A message went out after failures elsewhere: try every failing chat again now,
        rather than at each row's own retry time, up to a minute away."""
        self._failing.discard(recipient)
        if self._failing:
            self._released |= self._failing
            self._failing.clear()
            self._wake.set()

    async def _failed(
        self,
        ids: Sequence[int],
        refs: str,
        error: str,
        retry_in: float,
        uncertain: bool = False,
        count: bool = True,
    ) -> None:
        log.warning("staff_message_failed case=%s error=%s retry_in=%.1f", refs, error, retry_in)
        async with self.store.transaction(urgent=True) as tx:
            await tx.deliveries_failed(
                ids, error, retry_in, keep_sending=uncertain, count_attempt=count
            )

    # ------------------------------------------------------------------ timers
    async def _heartbeat(self, now: datetime) -> None:
        clock = monotonic_time.monotonic()
        if clock - self._last_heartbeat < HEARTBEAT_SECONDS:
            return
        self._last_heartbeat = clock
        async with self.store.transaction(urgent=True) as tx:
            await tx.set_clock(HEARTBEAT, iso(now))

    async def _digest_if_due(self, now: datetime) -> None:
        if self.digest_time is None:
            return
        due = await self.store.clock(DIGEST)
        if due is None:
            async with self.store.transaction() as tx:
                await tx.set_clock(DIGEST, iso(self._next_digest(now)))
            return
        if due > iso(now):
            return
        async with self.store.transaction() as tx:
            if await tx.set_clock(DIGEST, iso(self._next_digest(now)), expected=due):
                await tx.add_delivery("digest", STAFF_CHAT, NOTICE_PRIORITY, due=iso(now))
                log.info("digest_queued")

    def _next_digest(self, now: datetime) -> datetime:
        assert self.digest_time is not None
        zone = self.paging.rota.zone
        local = now.astimezone(zone)
        candidate = datetime.combine(local.date(), self.digest_time, tzinfo=zone)
        if candidate <= local:
            candidate = datetime.combine(
                local.date() + timedelta(days=1), self.digest_time, tzinfo=zone
            )
        return candidate.astimezone(UTC)


class _Pace:
    """A token bucket: up to `burst` quickly (`min_gap` apart), then `per_second` on
    average."""

    def __init__(self, burst: int, per_second: float, min_gap: float = MIN_GAP_SECONDS) -> None:
        self.burst = float(burst)
        self.per_second = per_second
        self.min_gap = min_gap
        self.tokens = float(burst)
        self.stamp: float | None = None
        self.last_spent: float | None = None

    def _refill(self, clock: float) -> None:
        if self.per_second == float("inf"):
            self.tokens = self.burst
        elif self.stamp is not None:
            gained = (clock - self.stamp) * self.per_second
            self.tokens = min(self.burst, self.tokens + gained)
        self.stamp = clock

    def ready(self, clock: float) -> bool:
        return self.wait(clock) <= 0.0

    def wait(self, clock: float) -> float:
        """Seconds until one more may go (0 if now)."""
        self._refill(clock)
        gap = 0.0
        if self.last_spent is not None:
            gap = self.min_gap - (clock - self.last_spent)
        short = 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.per_second
        return max(gap, short, 0.0)

    def spend(self, clock: float) -> None:
        self._refill(clock)
        self.tokens -= 1.0
        self.last_spent = clock


def _batch(rows: list[DeliveryRow]) -> list[DeliveryRow]:
    """What goes in the next message to one recipient: the most urgent row, and if it is an
    alert, every other due alert (up to MAX_COMBINED cases) so a burst goes out as one."""
    first = rows[0]
    if first.kind != "alert":
        return [first]
    escalations: list[int | None] = []
    batch = []
    for row in rows:
        if row.kind != "alert":
            continue
        if row.escalation_id not in escalations:
            if len(escalations) == MAX_COMBINED:
                continue
            escalations.append(row.escalation_id)
        batch.append(row)
    return batch


def _backoff(rows: Sequence[DeliveryRow]) -> float:
    cap = ALERT_MAX_BACKOFF_SECONDS if any(r.kind == "alert" for r in rows) else None
    return min(2.0 ** min(max(r.attempts for r in rows), 16), cap or MAX_BACKOFF_SECONDS)
