"""Long polling that confirms an update to Telegram only once it is safe.

Telegram forgets an update once `getUpdates` is called with a higher offset. aiogram's own
polling asks for the next batch as soon as the handlers of the last one have *started*, so a
`kill -9` in the few milliseconds before a handler commits would lose that update: an urgent
message with no alert and no reply. Here the offset only moves past an update once its turn
is saved (answer, alert and update id committed, `bot.dialogue.service`, which says so through
`UPDATE_SAVED`) or, for other handlers, once handling has finished. Anything unsaved is
delivered again after a restart, and the `processed_updates` table makes a second delivery of
a saved one harmless.

Why "saved" and not "answered": Telegram returns at most 100 unconfirmed updates, so updates
whose replies wait for Telegram's pace would hide every newer one, an urgent message included,
when many people write at once. A reply lost to a crash after the save is made good: the
reporter's next message brings it back (`ReportingService`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, cast

from aiogram import Bot, Dispatcher
from aiogram.methods import GetUpdates
from aiogram.types import Update
from pydantic import ValidationError

log = logging.getLogger("safeguard.telegram")

# Set for each update being handled: call it once the update's turn is committed, so Telegram
# may forget it before the reply has gone out.
UPDATE_SAVED: ContextVar[Callable[[], None] | None] = ContextVar("update_saved", default=None)

# Telegram unreachable: ask again after 0.5 s, 1 s, 2 s ... at most this long, so reporters are
# heard again within seconds of it coming back.
MAX_BACKOFF_SECONDS = 5.0
# While an update is being handled Telegram keeps returning it, so long polling is not possible:
# ask again this often for new ones. (At most 100 updates come back at a time, so a hundred
# handlers stuck together would hold up newer updates until one finishes.)
BUSY_POLL_SECONDS = 0.05

RawUpdate = dict[str, Any]


class GetRawUpdates(GetUpdates):
    """getUpdates answered as plain JSON objects, parsed here one by one.

    While updates are in hand Telegram sends them again with every poll (about 80 at a time
    under load), and aiogram would parse each into its models again; only new ones are worth
    parsing. One update that does not parse is then set aside, instead of failing every poll.
    """

    __returning__ = list[RawUpdate]  # type: ignore[assignment]


class DurablePoller:
    def __init__(
        self,
        dp: Dispatcher,
        bot: Bot,
        polling_timeout: int,
        allowed_updates: list[str],
        **context: Any,
    ) -> None:
        self.dp = dp
        self.bot = bot
        self.polling_timeout = polling_timeout
        self.allowed_updates = allowed_updates
        self.context = context
        self._handling: dict[int, asyncio.Task[Any]] = {}
        self._finished: set[int] = set()  # finished, but above the confirmed offset
        # Each sender's newest update, as the event set once it is saved (or finished).
        self._last_from: dict[int, asyncio.Event] = {}
        self._saved_events: dict[int, asyncio.Event] = {}
        self._highest = -1
        self._stop = asyncio.Event()
        self._progress = asyncio.Event()  # an update was saved or finished

    def stop(self) -> None:
        self._stop.set()

    def _unsaved(self) -> list[int]:
        return [i for i in self._handling if not self._saved_events[i].is_set()]

    @property
    def offset(self) -> int | None:
        """The next getUpdates offset: everything below it has been saved or handled."""
        unsaved = self._unsaved()
        if unsaved:
            return min(unsaved)
        return self._highest + 1 if self._highest >= 0 else None

    async def run(self, drain_seconds: float) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        await self.dp.emit_startup(bot=self.bot, **self.context)
        try:
            await self._poll()
        finally:
            await self._drain(drain_seconds)
            await self.dp.emit_shutdown(bot=self.bot, **self.context)

    async def _poll(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            fetch = asyncio.ensure_future(self._fetch())
            stopped = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not fetch.done():
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await fetch
                break
            stopped.cancel()
            try:
                updates = fetch.result()
            except Exception as exc:  # Telegram down or unreachable: keep trying
                log.warning("polling_failed error=%s retry_in=%.1f", type(exc).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = 0.5
            fresh = [
                raw
                for raw in updates
                if raw.get("update_id") not in self._handling
                and raw.get("update_id") not in self._finished
            ]
            for raw in fresh:
                self._start_raw(raw)
            await self._pause_while_busy()

    async def _pause_while_busy(self) -> None:
        """Busy: ask again at a steady pace rather than once per update, as each request costs
        CPU and Telegram answers it with every update not yet saved. As soon as all in hand
        are saved, long polling takes over, so a quiet bot hears a new message at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_POLL_SECONDS
        while self._unsaved():
            self._progress.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    async def _fetch(self) -> list[RawUpdate]:
        # While updates not yet saved are being handled, do not long-poll: they would come
        # straight back. Saved ones are confirmed by the offset, so long polling goes on.
        timeout = 0 if self._unsaved() else self.polling_timeout
        offset = self.offset
        method = GetRawUpdates(offset=offset, timeout=timeout, allowed_updates=self.allowed_updates)
        request_timeout = int((self.bot.session.timeout or 60) + timeout)
        # aiogram types the answer by the parent class; it is the raw JSON list.
        updates = cast(list[RawUpdate], await self.bot(method, request_timeout=request_timeout))
        # Telegram has now forgotten everything below `offset`, so only those finished
        # updates can be forgotten here. (Not below a newer offset: updates that finished
        # while this request was out may be in its answer, and must not be handled twice.)
        if offset is not None:
            self._finished = {i for i in self._finished if i >= offset}
        return updates

    def _start_raw(self, raw: RawUpdate) -> None:
        try:
            update = Update.model_validate(raw, context={"bot": self.bot})
        except ValidationError:
            update_id = raw.get("update_id")
            if not isinstance(update_id, int):
                return  # nothing to confirm it by; Telegram always numbers its updates
            # Confirmed and skipped, so it cannot hold up every update after it.
            log.error("update_unreadable update_id=%s", update_id)
            self._highest = max(self._highest, update_id)
            self._finished.add(update_id)
            return
        self._start(update)

    def _start(self, update: Update) -> None:
        self._highest = max(self._highest, update.update_id)
        # One person's updates in the order they sent them (a tap on a button, then words
        # typed straight after, must not swap): each waits until the one before is saved, not
        # answered, so a message from someone whose last reply waits for Telegram's pace (a
        # cry for help, say) is read at once. Different people's run side by side.
        sender = _sender(update)
        before = self._last_from.get(sender) if sender is not None else None
        saved = asyncio.Event()
        self._saved_events[update.update_id] = saved
        task = asyncio.create_task(self._handle(update, after=before))
        self._handling[update.update_id] = task
        if sender is not None:
            self._last_from[sender] = saved
        task.add_done_callback(lambda _: self._done(update.update_id, sender, saved))

    async def _handle(self, update: Update, after: asyncio.Event | None = None) -> None:
        if after is not None:
            await after.wait()
        UPDATE_SAVED.set(lambda: self._mark_saved(update.update_id))  # this task's own context
        try:
            await self.dp.feed_update(self.bot, update, **self.context)
        except Exception as exc:  # the dispatcher's error handler logged it already
            log.error("update_not_handled error=%s", type(exc).__name__)

    def _mark_saved(self, update_id: int) -> None:
        event = self._saved_events.get(update_id)
        if event is not None:
            event.set()
        self._progress.set()

    def _done(self, update_id: int, sender: int | None, saved: asyncio.Event) -> None:
        self._handling.pop(update_id, None)
        self._saved_events.pop(update_id, None)
        saved.set()
        self._finished.add(update_id)
        self._progress.set()
        if sender is not None and self._last_from.get(sender) is saved:
            del self._last_from[sender]

    async def _drain(self, seconds: float) -> None:
        """Let updates being handled finish; what does not is delivered again next start."""
        pending = list(self._handling.values())
        if pending:
            await asyncio.wait(pending, timeout=seconds)


def _sender(update: Update) -> int | None:
    """Who sent an update (a user id), or None for updates with no sender."""
    try:
        event = update.event
    except Exception:  # an update type this aiogram does not know
        return None
    user = getattr(event, "from_user", None)
    return int(user.id) if user is not None else None
