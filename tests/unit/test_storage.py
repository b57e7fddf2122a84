"""The SQLite store: its settings, migrations, file permissions and transactions."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from bot.errors import StorageBusyError, StorageError
from bot.storage import sqlite as sqlite_module
from bot.storage.sqlite import DB_NAME, SqliteStore, _migrations


async def test_database_runs_with_wal_foreign_keys_and_secure_delete(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path) as store:
        assert str(await store.pragma("journal_mode")).lower() == "wal"
        assert await store.pragma("foreign_keys") == 1
        assert await store.pragma("secure_delete") == 1
        assert await store.pragma("user_version") == max(v for v, _ in _migrations())


async def test_migrations_apply_once_and_reopen_cleanly(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path) as store, store.transaction() as tx:
        await tx.ensure_case("AAAA-BBBB-CCCC", "pseudonym", "young_person")
    async with SqliteStore(tmp_path) as store:
        case = await store.get_case("AAAA-BBBB-CCCC")
        assert case.audience == "young_person" and case.level == "routine"


async def test_database_file_is_private_to_the_service_user(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "data"):
        pass
    mode = stat.S_IMODE((tmp_path / "data" / DB_NAME).stat().st_mode)
    assert mode & 0o077 == 0, oct(mode)


async def test_acknowledging_twice_counts_once(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path) as store:
        async with store.transaction() as tx:
            await tx.ensure_case("AAAA-BBBB-CCCC", "p", None)
            escalation = await tx.add_escalation("AAAA-BBBB-CCCC", "immediate", ["rule:x"])
            second = await tx.add_escalation("AAAA-BBBB-CCCC", "high", ["rule:y"])
        async with store.transaction() as tx:
            assert await tx.acknowledge("AAAA-BBBB-CCCC", "Sam") == [escalation, second]
        async with store.transaction() as tx:
            assert await tx.acknowledge("AAAA-BBBB-CCCC", "Ann") == []
        row = await store.get_escalation(escalation)
        assert row.acknowledged_by == "Sam" and row.next_step_at is None
        assert await store.due_escalations("9999") == []


async def test_case_level_only_rises(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path) as store:
        async with store.transaction() as tx:
            await tx.ensure_case("AAAA-BBBB-CCCC", "p", None)
            await tx.raise_case_level("AAAA-BBBB-CCCC", "immediate")
            await tx.raise_case_level("AAAA-BBBB-CCCC", "routine")
        assert (await store.get_case("AAAA-BBBB-CCCC")).level == "immediate"


async def test_grouped_transactions_are_all_saved_in_fewer_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given fifty reporters' turns saved at once, writes only
    trips: list[int] = []
    real = sqlite_module._run_in_writer_thread

    async def counted(db: Any, fn: Any, *args: Any) -> None:
        trips.append(1)
        await real(db, fn, *args)

    monkeypatch.setattr(sqlite_module, "_run_in_writer_thread", counted)
    async with SqliteStore(tmp_path) as store:

        async def turn(i: int) -> None:
            async with store.transaction(grouped=True) as tx:
                await tx.save_draft(f"p{i}", b"draft %d" % i)
                await tx.mark_processed(i)

        # When they commit
        await asyncio.gather(*(turn(i) for i in range(50)))
        # Then every one is on disk once each returned, in far fewer commits than turns
        for i in range(50):
            assert await store.load_draft(f"p{i}") == b"draft %d" % i
            assert await store.was_processed(i)
        assert len(trips) < 10


async def test_a_grouped_transaction_cannot_read(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path) as store:
        with pytest.raises(StorageError, match="cannot read"):
            async with store.transaction(grouped=True) as tx:
                await tx.assigned_to("AAAA-BBBB-CCCC")


async def test_a_locked_database_fails_every_grouped_transaction_and_writes_none(
    tmp_path: Path,
) -> None:
    # Given another process holding the write lock past the busy timeout
    async with SqliteStore(tmp_path, busy_timeout_ms=100) as store:
        other = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:

            async def turn(i: int) -> None:
                async with store.transaction(grouped=True) as tx:
                    await tx.save_draft(f"p{i}", b"x")

            # When turns are saved, each is told the database stayed locked
            results = await asyncio.gather(*(turn(i) for i in range(5)), return_exceptions=True)
            assert all(isinstance(r, StorageBusyError) for r in results), results
        finally:
            other.execute("ROLLBACK")
            other.close()
        # and nothing was half written; once free, the next one goes through.
        assert [await store.load_draft(f"p{i}") for i in range(5)] == [None] * 5
        await turn(0)
        assert await store.load_draft("p0") == b"x"


async def test_queued_writes_are_seen_by_reads_later_in_the_same_transaction(
    tmp_path: Path,
) -> None:
    async with SqliteStore(tmp_path) as store:
        async with store.transaction() as tx:
            await tx.ensure_case("AAAA-BBBB-CCCC", "p", None)
            await tx.save_draft("p", b"queued")  # queued, sent with the read below
            await tx.assign("AAAA-BBBB-CCCC", "Sam")
            assert await tx.assigned_to("AAAA-BBBB-CCCC") == "Sam"
            assert await tx.reports_since("p", "0000") >= 0
        assert await store.load_draft("p") == b"queued"
