"""The SQLite store: its settings, migrations and file permissions."""

from __future__ import annotations

import stat
from pathlib import Path

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
