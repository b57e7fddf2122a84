"""Backups and restoring one: private single files, consistent while others write, refused
while the bot runs or when the file is not ours, and nothing purged comes back."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from bot.config import RetentionSettings
from bot.crypto import BotCrypto
from bot.errors import BotRunningError, StorageBusyError, StorageError
from bot.reports.reference import new_reference
from bot.storage import backup as backup_module
from bot.storage.backup import backup, check_backup, restore
from bot.storage.lock import data_dir_lock
from bot.storage.retention import purge
from bot.storage.sqlite import DB_NAME, SqliteStore
from tests.unit.test_retention import NOW, add_case, ago, marker, raw_bytes, rows


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def refs_in(path: Path) -> set[str]:
    return {str(r[0]) for r in rows(path, "SELECT ref FROM cases")}


# ---------------------------------------------------------------------------------- backup
async def test_a_backup_is_one_private_checked_file_with_the_cases(
    store: SqliteStore, crypto: BotCrypto, data_dir: Path
) -> None:
    # Given a case
    ref = new_reference()
    await add_case(store, crypto, ref, "kept", created=ago(days=1))

    # When a backup is made into a dir that does not exist yet
    path = await backup(store, data_dir / "backups")

    # Then it is a private file in a private dir, named by time, one file with no WAL
    assert path.parent == data_dir / "backups" and path.name.startswith("safeguard-")
    assert path.name.endswith("Z.sqlite3")
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()
    assert rows(path, "PRAGMA journal_mode") == [("delete",)]
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    assert check_backup(path) >= 3
    # ... with the case, still sealed (a canary written in the report is not readable)
    assert refs_in(path) == {ref}
    assert b"CANARY-kept" not in path.read_bytes()
    # ... no key material beside it, and the live audit trail says it was made
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    made = [e for e in await store.audit_entries() if e.action == "backup_made"]
    assert [e.detail for e in made] == [path.name]
    assert (await store.verify_audit()).ok


async def test_two_backups_in_one_second_do_not_overwrite_each_other(
    store: SqliteStore, data_dir: Path
) -> None:
    # Given a backup made at a moment
    first = await backup(store, data_dir / "backups", now=NOW)
    # When another is made in the same second
    second = await backup(store, data_dir / "backups", now=NOW)
    # Then both exist under different names
    assert first != second and first.exists() and second.exists()


async def test_a_backup_while_another_writer_holds_a_transaction_is_consistent(
    store: SqliteStore, crypto: BotCrypto, data_dir: Path
) -> None:
    # Given a committed case, and another connection (another process) in the middle of
    # writing a second one, its transaction still open
    committed, uncommitted = new_reference(), new_reference()
    await add_case(store, crypto, committed, "committed", created=ago(days=1))
    other = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute(
            "INSERT INTO cases (ref, reporter, created_at) VALUES (?, ?, ?)",
            (uncommitted, marker("uncommitted"), ago(hours=1)),
        )

        # When a backup is made meanwhile
        path = await asyncio.wait_for(backup_without_audit(data_dir), timeout=10)

        # Then it holds what was committed, not the half-written transaction, and is sound
        assert refs_in(path) == {committed}
        assert rows(path, "PRAGMA integrity_check") == [("ok",)]
        other.execute("COMMIT")
    finally:
        other.close()
    assert {c.ref for c in await store.list_cases()} == {committed, uncommitted}


async def backup_without_audit(data_dir: Path) -> Path:
    # The audit entry needs the write lock the other connection holds: copy only.
    return await backup(SqliteStore(data_dir), data_dir / "backups")


async def test_a_database_locked_past_the_retries_is_a_clear_error_and_leaves_nothing(
    store: SqliteStore, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given another connection holding the database in exclusive locking mode (no reader
    # can get in), and short retries
    monkeypatch.setattr(backup_module, "BUSY_WAIT_SECONDS", 0.3)
    monkeypatch.setattr(backup_module, "BUSY_SLEEP_SECONDS", 0.05)
    await store.close()
    hog = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    try:
        hog.execute("PRAGMA locking_mode = EXCLUSIVE")
        hog.execute("BEGIN EXCLUSIVE")
        hog.execute("UPDATE clock SET at = at")

        # When a backup is attempted
        with pytest.raises(StorageBusyError, match="locked"):
            await backup(SqliteStore(data_dir), data_dir / "backups")
    finally:
        hog.close()

    # Then no file was left behind, not even a partial one
    assert list((data_dir / "backups").iterdir()) == []


# ---------------------------------------------------------------------------------- restore
async def test_restore_is_refused_while_the_bot_runs(
    store: SqliteStore, crypto: BotCrypto, data_dir: Path
) -> None:
    # Given a backup, and the bot running (it holds the data dir's lock)
    ref = new_reference()
    await add_case(store, crypto, ref, "live", created=ago(days=1))
    path = await backup(store, data_dir / "backups")
    await store.close()
    before = (data_dir / DB_NAME).read_bytes()

    # When a restore is attempted, Then it is refused
    with (
        data_dir_lock(data_dir, "running the bot"),
        pytest.raises(BotRunningError, match="restoring a backup"),
    ):
        await restore(data_dir, path)

    # ... and the live database was not touched
    assert (data_dir / DB_NAME).read_bytes() == before
    assert not list(data_dir.glob("*.before-restore-*"))


def _wrong_schema(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE cases (ref TEXT)")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


@pytest.mark.parametrize("kind", ["text", "old_schema", "newer_schema", "not_ours"])
async def test_restore_refuses_a_file_that_is_not_our_database_and_leaves_the_live_one(
    store: SqliteStore, crypto: BotCrypto, data_dir: Path, tmp_path: Path, kind: str
) -> None:
    # Given a live case, and a file that is not a backup of ours
    ref = new_reference()
    await add_case(store, crypto, ref, "live", created=ago(days=1))
    await store.close()
    bad = tmp_path / f"{kind}.sqlite3"
    if kind == "text":
        bad.write_text("SQLite format 3? no, a letter")
    elif kind == "old_schema":
        _wrong_schema(bad, 1)
    elif kind == "newer_schema":
        good = await backup(SqliteStore(data_dir), tmp_path / "b")
        conn = sqlite3.connect(good)
        conn.execute("PRAGMA user_version = 99")
        conn.close()
        bad = good
    else:
        _wrong_schema(bad, 3)
    before = (data_dir / DB_NAME).read_bytes()

    # When it is restored, Then it is refused with a clear error
    with pytest.raises(StorageError):
        await restore(data_dir, bad)

    # ... and the live database is exactly as it was
    assert (data_dir / DB_NAME).read_bytes() == before
    assert refs_in(data_dir / DB_NAME) == {ref}
    assert not list(data_dir.glob("*.before-restore-*"))


async def test_a_restored_database_has_the_backups_cases_and_keeps_the_old_one(
    store: SqliteStore, crypto: BotCrypto, data_dir: Path
) -> None:
    # Given a backup with one case, and a second case made after it
    first, later = new_reference(), new_reference()
    await add_case(store, crypto, first, "first", created=ago(days=2))
    path = await backup(store, data_dir / "backups")
    await add_case(store, crypto, later, "later", created=ago(days=1))
    await store.close()

    # When the backup is restored
    result = await restore(data_dir, path, RetentionSettings(), now=NOW)

    # Then the live database holds the backup's cases, in a private file with no stale WAL
    live = data_dir / DB_NAME
    assert refs_in(live) == {first} and result.cases == 1
    assert mode(live) == 0o600
    assert not Path(f"{live}-wal").exists() or Path(f"{live}-wal").stat().st_size == 0
    # ... the database as it was is kept beside it, private, with the later case
    assert result.previous is not None and result.previous.name.startswith(
        f"{DB_NAME}.before-restore-"
    )
    assert mode(result.previous) == 0o600 and refs_in(result.previous) == {first, later}
    # ... and the restore is in the (still verifying) audit trail
    async with SqliteStore(data_dir, chain=crypto.chain_audit_entry) as reopened:
        assert "backup_restored" in [e.action for e in await reopened.audit_entries()]
        assert (await reopened.verify_audit()).ok
        assert len(await reopened.records_for(first)) == 1


async def test_restoring_an_old_backup_does_not_bring_back_what_was_purged(
    store: SqliteStore, crypto: BotCrypto, data_dir: Path, tmp_path: Path
) -> None:
    # Given a backup kept outside the backup dir (the purge does not clean it) while a case
    # was open, the case since closed long enough ago, and purged from the live database
    ref = new_reference()
    await add_case(store, crypto, ref, "purged_since", created=ago(days=200))
    path = await backup(store, tmp_path / "elsewhere")
    async with store.transaction() as tx:
        await tx.close_case(ref, "advice_given")
    async with store.exclusive() as db:
        await db.execute("UPDATE cases SET closed_at = ? WHERE ref = ?", (ago(days=100), ref))
    assert (await purge(store, RetentionSettings(), NOW)).closed_cases == 1
    await store.close()
    assert refs_in(path) == {ref}

    # When that backup is restored
    result = await restore(data_dir, path, RetentionSettings(), now=NOW)

    # Then the case is erased again, keys first, and nothing of it is in the file
    live = data_dir / DB_NAME
    assert result.purged_again == 1 and refs_in(live) == set()
    assert rows(live, "SELECT COUNT(*) FROM sealed_keys")[0][0] == 0
    assert marker("purged_since").encode() not in raw_bytes(live)


# ---------------------------------------------------------------------------------- the CLI
def safeguard(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    env["SAFEGUARD_STORAGE__DATA_DIR"] = str(cwd / "data")
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_cli_backup_purge_and_restore(
    store: SqliteStore, crypto: BotCrypto, data_dir: Path, tmp_path: Path
) -> None:
    # Given a data dir with a closed case due for erasure and an open one
    due, kept = new_reference(), new_reference()
    await add_case(store, crypto, due, "due", created=ago(days=200), closed=ago(days=100))
    await add_case(store, crypto, kept, "kept", created=ago(days=200))
    await store.close()
    assert data_dir == tmp_path / "data"

    # When `safeguard backup` runs
    made = safeguard("backup", cwd=tmp_path)

    # Then it writes a backup and says the keys are not in it
    assert made.returncode == 0, made.stderr
    assert "Backup written" in made.stdout and "keys directory" in made.stdout
    (path,) = (data_dir / "backups").glob("safeguard-*.sqlite3")
    assert mode(path) == 0o600

    # When `safeguard purge --dry-run --json` runs, Then it counts and changes nothing
    dry = safeguard("purge", "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    counts = json.loads(dry.stdout)
    assert counts["closed_cases"] == 1 and counts["cases"] == 1 and counts["dry_run"] is True
    assert refs_in(data_dir / DB_NAME) == {due, kept} and refs_in(path) == {due, kept}

    # When `safeguard purge` runs, Then the case is erased here and in the backup
    done = safeguard("purge", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Erased 1 cases" in done.stdout and "1 cleaned" in done.stdout
    assert refs_in(data_dir / DB_NAME) == {kept} and refs_in(path) == {kept}

    # When `safeguard restore` runs without a terminal and without --yes, Then it refuses
    refused = safeguard("restore", str(path), cwd=tmp_path)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert "Traceback" not in refused.stderr
    # ... and a file that is not a database is refused before anything is asked
    junk = tmp_path / "junk.sqlite3"
    junk.write_text("hello")
    assert safeguard("restore", str(junk), "--yes", cwd=tmp_path).returncode == 2

    # When it runs with --yes, Then it restores and says where the old database is
    restored = safeguard("restore", str(path), "--yes", cwd=tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert "before-restore" in restored.stdout and refs_in(data_dir / DB_NAME) == {kept}


def test_a_backup_name_sorts_by_time() -> None:
    # Given two moments a second apart, Then their backup names sort in time order
    first = backup_module.backup_name(NOW)
    second = backup_module.backup_name(NOW + timedelta(seconds=1))
    assert first < second and first.startswith("safeguard-")
