"""Faults injected in-process, through the real store and the real reporting service."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bot.crypto import BotCrypto
from bot.dialogue.content import Content
from bot.dialogue.engine import Inbound
from bot.dialogue.service import ReportingService
from nlu.pipeline import build_nlu
from tests.conftest import ROOT, make_paging, signed_store
from tests.unit.test_service import REPORTER, Reporter

NO_LIMIT = 1_073_741_823  # SQLite's default max_page_count


async def test_disk_full_tells_the_reporter_plainly_and_the_next_message_works(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = Content.load(ROOT / "config", "en")
    crypto = BotCrypto.load(data_dir)
    async with signed_store(data_dir, busy_timeout_ms=200) as store:
        service = ReportingService(content, store, crypto, build_nlu(), make_paging(crypto))
        reporter = Reporter(service)
        await reporter.do(Inbound("start"))
        await reporter.press(content.wording.audiences["young_person"])

        # Given the disk is full: the bot's own connection may not grow the file by one page
        # (SQLITE_FULL, as on a full disk; max_page_count holds per connection only)
        async with store.exclusive() as db:
            await db.execute("VACUUM")  # no free pages left inside the file either
        await store.pragma(f"max_page_count = {await store.pragma('page_count')}")
        words = "it happened after school on the bus most days last term " * 40
        caplog.set_level(logging.INFO)

        # When a reporter goes on answering until the file would have to grow
        went_wrong = content.wording.something_went_wrong
        for n in range(60):
            seen = len(reporter.m.replies)
            draft_before = await store.load_draft(crypto.pseudonym_for(REPORTER))
            turn = asyncio.create_task(reporter.say(f"{n} {words}"))
            for _ in range(100):
                if turn.done() or went_wrong in [r.html for r in reporter.m.replies[seen:]]:
                    break
                await asyncio.sleep(0.02)
            if not turn.done():
                break
        else:
            pytest.fail("the database never filled up")

        # Then they are told plainly, with the 999 line, and not left in silence
        told = reporter.m.replies[-1].html
        assert told == content.wording.something_went_wrong
        assert "999" in told and "again" in told
        # And the operator sees a clear line: the event, never the words
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors and all(e.startswith("turn_not_saved error=StorageError") for e in errors)
        assert "after school" not in caplog.text
        # And nothing was half-written
        assert await store.pragma("integrity_check") == "ok"
        assert await store.load_draft(crypto.pseudonym_for(REPORTER)) == draft_before
        assert not turn.done()

        # When space returns, the answer lands by itself (nobody had to send it again)
        await store.pragma(f"max_page_count = {NO_LIMIT}")
        await asyncio.wait_for(turn, 10)
        replies = [r.html for r in reporter.m.replies]
        assert replies.count(content.wording.something_went_wrong) == 1  # told once
        assert replies[-1] != content.wording.something_went_wrong
        # And the next message works at once
        count = len(replies)
        await reporter.say("a boy in year 9")
        assert len(reporter.m.replies) > count
        assert content.wording.something_went_wrong not in [
            r.html for r in reporter.m.replies[count:]
        ]
        assert await store.pragma("integrity_check") == "ok"
