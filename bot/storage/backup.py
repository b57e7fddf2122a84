"""Backups of the database, and restoring one.

A backup is the database only, as sealed as the live one: reports open only with a staff
key, drafts and reply handles only with the bot's secrets file. Neither is copied: the keys
directory is backed up separately, offline, by whoever holds it.

`backup` uses SQLite's online backup API from a connection of its own, so it works while the
bot runs: the copy is one consistent snapshot of what was committed (a transaction still open
elsewhere is not in it). The copy is checked (`PRAGMA integrity_check`), kept in DELETE journal
mode (one file, no -wal beside it), mode 0600 in a 0700 directory, and only then given its
name, so a half-written file never looks like a backup. The retention purge applies its rules
to every backup file in the backup dir, so a backup keeps nothing the live database has erased.

`restore` refuses while the bot runs, checks the file before touching anything (also that
the data dir's bot_secrets.json still holds the secrets the backup was used with), keeps the
current database beside it (`safeguard.sqlite3.before-restore-<time>`), then copies the backup
in and erases from it whatever the purge had already erased since it was taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bot.config import RetentionSettings
from bot.errors import StorageBusyError, StorageError
from bot.storage.lock import data_dir_lock
from bot.storage.retention import PURGED_REFS_SQL, purge
from bot.storage.sqlite import DB_NAME, SqliteStore, _migrations, recorded_secret_checks

log = logging.getLogger("safeguard.backup")

OPERATOR = "operator"
MIN_SCHEMA = 3  # sealed_keys and audit_log: older files are not ours to restore
REQUIRED_TABLES = frozenset({"cases", "records", "sealed_keys", "audit_log", "conversations"})
SQLITE_MAGIC = b"SQLite format 3\x00"
# How long a backup waits for a lock held by another connection before giving up.
BUSY_WAIT_SECONDS = 30.0
BUSY_SLEEP_SECONDS = 0.25
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


@dataclass(frozen=True)
class RestoreResult:
    restored_from: Path
    previous: Path | None  # the database as it was before, kept beside it
    cases: int
    purged_again: int  # cases in the backup the purge had erased since it was taken


def backup_name(now: datetime) -> str:
    return f"safeguard-{now.astimezone(UTC):%Y%m%dT%H%M%S}Z.sqlite3"


def latest_schema() -> int:
    return max(version for version, _ in _migrations())


async def backup(
    store: SqliteStore,
    backup_dir: Path,
    *,
    actor: str = OPERATOR,
    now: datetime | None = None,
) -> Path:
    """Write a checked copy of the live database into `backup_dir`; returns its path. With a
    store opened with `chain=`, the audit trail gets `backup_made` (the file name only)."""
    now = now or datetime.now(UTC)
    _private_dir(backup_dir)
    target = _free_name(backup_dir, backup_name(now))
    await asyncio.to_thread(_copy_checked, store.path, target)
    if store.chain is not None:
        async with store.transaction() as tx:
            await tx.audit(actor, "backup_made", detail=target.name)
    log.info("backup_made")
    return target


async def restore(
    data_dir: Path,
    backup_file: Path,
    retention: RetentionSettings | None = None,
    *,
    actor: str = OPERATOR,
    now: datetime | None = None,
) -> RestoreResult:
    """Replace the live database with a backup. The bot must be stopped. Needs the data dir's
    keys (the audit entry `backup_restored` is signed). With `retention`, the restored file
    loses every case the live audit trail says was purged, and what is due by the rules."""
    from bot.crypto import BotCrypto
    from bot.key_ceremonies import admin_store

    now = now or datetime.now(UTC)
    with data_dir_lock(data_dir, "restoring a backup"):
        check_backup(backup_file)
        # A backup made before a rotation needs the generation then current, which
        # bot_secrets.json keeps for 30 days; a backup of another data dir matches nothing.
        BotCrypto.load(data_dir).match_secret_checks(
            await asyncio.to_thread(recorded_secret_checks, backup_file),
            database=f"the backup {backup_file.name}",
            advice="nothing was restored (restore the bot_secrets.json it was made with first)",
        )
        live = data_dir / DB_NAME
        stamp = f"{now.astimezone(UTC):%Y%m%dT%H%M%S}Z"
        previous: Path | None = None
        purged_refs: list[str] = []
        if live.exists():
            previous = _free_name(data_dir, f"{DB_NAME}.before-restore-{stamp}")
            await asyncio.to_thread(_copy_checked, live, previous, check=False)
            purged_refs = await asyncio.to_thread(_purged_refs_in, previous)
        partial = data_dir / f".{DB_NAME}.restoring"
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        await asyncio.to_thread(_copy_checked, backup_file, partial)
        # The old WAL and shared-memory index belong to the old file: left beside the new one,
        # SQLite could replay old pages into it.
        await asyncio.to_thread(_swap_in, partial, live)
        purged_again = 0
        async with admin_store(data_dir) as store:
            async with store.transaction() as tx:
                await tx.audit(actor, "backup_restored", detail=backup_file.name)
            if retention is not None:
                result = await purge(
                    store, retention, now, actor=actor, purged_before=purged_refs, vacuum=True
                )
                purged_again = result.cases
            cases = len(await store.list_cases())
    log.info("backup_restored purged_again=%d", purged_again)
    return RestoreResult(backup_file, previous, cases, purged_again)


def check_backup(path: Path) -> int:
    """Raise StorageError unless `path` is a sound database with our schema; returns its
    schema version. Reads only."""
    if not path.is_file():
        raise StorageError(f"no such backup file: {path}")
    with path.open("rb") as fh:
        if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise StorageError(f"{path.name} is not a SQLite database")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        raise StorageError(f"cannot open {path.name}") from None
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = {
            str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    except sqlite3.Error as exc:
        raise StorageError(
            f"{path.name} is not a readable database: {type(exc).__name__}"
        ) from None
    finally:
        conn.close()
    if version < MIN_SCHEMA or not tables >= REQUIRED_TABLES:
        raise StorageError(f"{path.name} is not a safeguard database of schema 3 or later")
    if version > latest_schema():
        raise StorageError(
            f"{path.name} has schema {version}, newer than this version knows "
            f"({latest_schema()}); upgrade safeguard first"
        )
    if integrity != "ok":
        raise StorageError(f"{path.name} failed its integrity check")
    return version


# ---------------------------------------------------------------------------------- helpers
def _copy_checked(source: Path, target: Path, *, check: bool = True) -> None:
    """Online-backup `source` into a new file `target` (0600, DELETE journal mode), checked.
    Written under a hidden name first; a database locked past the retries is a clear error."""
    partial = target.with_name(f".{target.name}.partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        _online_backup(source, partial)
        dest = sqlite3.connect(partial, isolation_level=None)
        try:
            mode = str(dest.execute("PRAGMA journal_mode = DELETE").fetchone()[0]).lower()
            integrity = str(dest.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            dest.close()
        if mode != "delete":
            raise StorageError("the copy could not be set to a single file")
        if check and integrity != "ok":
            raise StorageError("the copy failed its integrity check; nothing was kept")
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(partial, 0o600)
        os.replace(partial, target)
        _fsync_dir(target.parent)
    except BaseException:
        for leftover in (partial, Path(f"{partial}-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise


class _StillBusy(Exception):
    pass


def _online_backup(source: Path, target: Path) -> None:
    """Copy every page in one step (one consistent snapshot). Another connection holding a
    lock that keeps readers out makes the step BUSY; Python's backup would retry for ever, so
    the progress callback gives up after BUSY_WAIT_SECONDS."""
    deadline = time.monotonic() + BUSY_WAIT_SECONDS

    def progress(status: int, remaining: int, total: int) -> None:
        if status in (_SQLITE_BUSY, _SQLITE_LOCKED):
            if time.monotonic() > deadline:
                raise _StillBusy
            log.warning("backup_busy")

    try:
        src = sqlite3.connect(source, timeout=BUSY_WAIT_SECONDS)
        try:
            src.execute("PRAGMA query_only = ON")
            dest = sqlite3.connect(target)
            try:
                src.backup(dest, progress=progress, sleep=BUSY_SLEEP_SECONDS)
            finally:
                dest.close()
        finally:
            src.close()
    except _StillBusy:
        raise StorageBusyError(
            "the database stayed locked; the backup was not made, try again"
        ) from None
    except sqlite3.Error as exc:
        message = str(exc).lower()
        if "locked" in message or "busy" in message:
            raise StorageBusyError(
                "the database stayed locked; the backup was not made, try again"
            ) from None
        raise StorageError(f"the backup failed: {type(exc).__name__}") from None


def _swap_in(partial: Path, live: Path) -> None:
    # The old WAL and shared-memory index belong to the old file: left beside the new one,
    # SQLite could replay old pages into it.
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{live}{suffix}").unlink()
    os.replace(partial, live)
    _fsync_dir(live.parent)


def _purged_refs_in(path: Path) -> list[str]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [str(r[0]) for r in conn.execute(PURGED_REFS_SQL)]
    except sqlite3.Error:
        return []  # a database from before the audit trail has nothing to say
    finally:
        conn.close()


def _private_dir(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
        os.chmod(directory, 0o700)
    elif not directory.is_dir():
        raise StorageError(f"the backup dir {directory} is not a directory")
    elif stat.S_IMODE(directory.stat().st_mode) & 0o077:
        log.warning("backup_dir_not_private")


def _free_name(directory: Path, name: str) -> Path:
    """`name` in `directory`, with -1, -2... before the extension if it is taken."""
    candidate = directory / name
    stem, dot, ext = name.partition(".")
    n = 0
    while candidate.exists():
        n += 1
        candidate = directory / f"{stem}-{n}{dot}{ext}"
    return candidate


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
