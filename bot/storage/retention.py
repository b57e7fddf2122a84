"""The retention purge: what has been kept long enough is erased, here and in every backup.

The rules (`RetentionSettings`, the `[retention]` section):

- unfinished: drafts idle past `unfinished_after_hours`, and cases that were never submitted,
  never escalated and never taken by anyone, idle as long;
- closed: closed cases never escalated, `closed_after_days` after they were closed;
- escalated: closed cases that were escalated, `escalated_after_days` after (0: never);
- open cases are never purged automatically, and codes on `legal_hold` never at all.

A case is erased crypto-shredding first: its wrapped data keys (`sealed_keys`) are deleted,
so its sealed records cannot be opened from any page, WAL frame or copy left anywhere; then
its row, which takes its records, alerts, deliveries and timeline with it (ON DELETE CASCADE).
Each purged case gets an audit entry (`case_purged`, the rule); the audit trail itself is never
touched. After the delete the WAL is checkpointed and truncated, `secure_delete` has zeroed the
freed space, and VACUUM rebuilds the file when due.

Backups must not keep what was purged: the same rules are applied to every backup file in
the backup dir (plain sqlite3; their audit trail is left as it was), and so is every case the
live audit trail says was purged, so a backup taken while a case was still open loses it too.

The SQL is shared by the live store (aiosqlite) and backup files (sqlite3).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from bot.config import RetentionSettings
from bot.errors import StorageBusyError, StorageError
from bot.storage.sqlite import BUSY_TIMEOUT_MS, SqliteStore, Tx, iso

log = logging.getLogger("safeguard.retention")

RULES = ("unfinished", "closed", "escalated", "purged_before")
VACUUM_CLOCK = "vacuum"
BACKUP_GLOB = "safeguard-*.sqlite3"
BACKUP_NAME = re.compile(r"^safeguard-(\d{8}T\d{6}Z)(?:-(\d+))?\.sqlite3$")

_ESCALATED = "EXISTS (SELECT 1 FROM escalations e WHERE e.case_ref = c.ref)"
_HELD = "c.ref NOT IN (SELECT value FROM json_each(:hold))"

# (ref, rule) of every case due. Idle for an unfinished case: nothing added to it, and no draft
# of its reporter touched, since the cutoff.
DUE_CASES_SQL = f"""
SELECT c.ref, 'unfinished' FROM cases c
WHERE {_HELD} AND c.status = 'open' AND c.submitted_at IS NULL AND c.assigned_to IS NULL
  AND NOT {_ESCALATED}
  AND c.created_at < :unfinished_before
  AND NOT EXISTS (SELECT 1 FROM records r
                  WHERE r.case_ref = c.ref AND r.created_at >= :unfinished_before)
  AND NOT EXISTS (SELECT 1 FROM case_events v
                  WHERE v.case_ref = c.ref AND v.at >= :unfinished_before)
  AND NOT EXISTS (SELECT 1 FROM conversations d
                  WHERE d.pseudonym = c.reporter AND d.updated_at >= :unfinished_before)
UNION ALL
SELECT c.ref, 'closed' FROM cases c
WHERE {_HELD} AND c.status = 'closed' AND NOT {_ESCALATED}
  AND COALESCE(c.closed_at, c.created_at) < :closed_before
UNION ALL
SELECT c.ref, 'escalated' FROM cases c
WHERE {_HELD} AND c.status = 'closed' AND {_ESCALATED}
  AND :escalated_before IS NOT NULL
  AND COALESCE(c.closed_at, c.created_at) < :escalated_before
UNION ALL
SELECT c.ref, 'purged_before' FROM cases c
WHERE {_HELD} AND c.ref IN (SELECT value FROM json_each(:purged_before))
"""
# Crypto-shredding first: with the wrapped data keys gone, no leftover copy of a sealed record
# can be opened. Then the case row; its records, escalations, deliveries and timeline cascade.
SHRED_KEYS_SQL = "DELETE FROM sealed_keys WHERE case_ref IN (SELECT value FROM json_each(:refs))"
DELETE_CASES_SQL = "DELETE FROM cases WHERE ref IN (SELECT value FROM json_each(:refs))"
COUNT_DRAFTS_SQL = "SELECT COUNT(*) FROM conversations WHERE updated_at < :unfinished_before"
DELETE_DRAFTS_SQL = "DELETE FROM conversations WHERE updated_at < :unfinished_before"
# Digests and notices (no case): once sent or cancelled, kept as long as a closed case.
_OLD_DELIVERIES = (
    "FROM deliveries WHERE case_ref IS NULL AND escalation_id IS NULL "
    "AND (sent_at IS NOT NULL OR cancelled_at IS NOT NULL) AND created_at < :closed_before"
)
COUNT_DELIVERIES_SQL = f"SELECT COUNT(*) {_OLD_DELIVERIES}"
DELETE_DELIVERIES_SQL = f"DELETE {_OLD_DELIVERIES}"
PURGED_REFS_SQL = (
    "SELECT DISTINCT case_ref FROM audit_log WHERE action = 'case_purged' AND case_ref IS NOT NULL"
)


@dataclass(frozen=True)
class PurgeResult:
    """What one purge did (or, dry, would do): counts only, never a reference or content."""

    unfinished_cases: int = 0
    closed_cases: int = 0
    escalated_cases: int = 0
    drafts: int = 0
    deliveries: int = 0
    backups_cleaned: int = 0  # backup files that had something purged in them
    backups_deleted: int = 0  # backup files beyond keep_backups
    backups_unreadable: int = 0  # files in the backup dir that are not a database we know
    vacuumed: bool = False
    dry_run: bool = False

    @property
    def cases(self) -> int:
        return self.unfinished_cases + self.closed_cases + self.escalated_cases

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "cases": self.cases}


@dataclass(frozen=True)
class _Due:
    by_rule: dict[str, list[str]]
    drafts: int
    deliveries: int

    @property
    def refs(self) -> list[str]:
        return sorted({ref for refs in self.by_rule.values() for ref in refs})

    def count(self, rule: str) -> int:
        return len(self.by_rule.get(rule, []))


def cutoffs(
    settings: RetentionSettings, now: datetime, *, purged_before: Collection[str] = ()
) -> dict[str, Any]:
    """The named parameters of the SQL above for one moment."""
    escalated = settings.escalated_after_days
    return {
        "unfinished_before": iso(now - timedelta(hours=settings.unfinished_after_hours)),
        "closed_before": iso(now - timedelta(days=settings.closed_after_days)),
        "escalated_before": iso(now - timedelta(days=escalated)) if escalated else None,
        "hold": json.dumps(list(settings.legal_hold)),
        # Refs purged before are erased wherever found (a backup, a restored file), but a code
        # on legal hold now stays wherever it still exists.
        "purged_before": json.dumps(sorted(purged_before)),
    }


def _due_from_rows(rows: Sequence[Sequence[Any]], drafts: int, deliveries: int) -> _Due:
    by_rule: dict[str, list[str]] = {}
    seen: set[str] = set()
    for ref, rule in rows:
        if ref in seen:  # a case matching two rules is counted under the first
            continue
        seen.add(ref)
        by_rule.setdefault(str(rule), []).append(str(ref))
    return _Due(by_rule, drafts, deliveries)


def _counts_of(due: _Due, **more: Any) -> PurgeResult:
    """A result with the counts of `due`. A case erased only because an earlier purge had
    (it came back in a restored backup) counts as closed: it was closed when first purged."""
    return PurgeResult(
        unfinished_cases=due.count("unfinished"),
        closed_cases=due.count("closed") + due.count("purged_before"),
        escalated_cases=due.count("escalated"),
        drafts=due.drafts,
        deliveries=due.deliveries,
        **more,
    )


# ---------------------------------------------------------------------------------- the store
async def purge(
    store: SqliteStore,
    settings: RetentionSettings,
    now: datetime | None = None,
    *,
    dry_run: bool = False,
    backup_dir: Path | None = None,
    vacuum: bool | None = None,
    actor: str = "bot",
    purged_before: Collection[str] = (),
) -> PurgeResult:
    """Erase what is due in the live database, then in every backup in `backup_dir`.

    One write transaction deletes and audits; then the WAL is checkpointed and truncated.
    `vacuum`: True always, False never, None when `vacuum_every_hours` has passed since the
    last (the `vacuum` clock). `purged_before`: codes to erase whatever their state (a restored
    backup's cases that were purged after it was taken). Needs a store opened with `chain=`
    unless `dry_run`.
    """
    now = now or datetime.now(UTC)
    params = cutoffs(settings, now, purged_before=purged_before)
    if dry_run:
        async with store.exclusive() as db:
            due = await _find_due(db, params)
        deleted = len(_excess_backups(backup_dir, settings.keep_backups)) if backup_dir else 0
        result = _counts_of(due, backups_deleted=deleted, dry_run=True)
        log.info("purge_dry_run cases=%d drafts=%d", result.cases, result.drafts)
        return result
    if store.chain is None:
        raise StorageError("the purge writes to the audit trail: it needs the bot's secrets")

    async with store.exclusive() as db:
        due = await _purge_live(db, store.chain, params, actor)
    vacuumed = False
    if vacuum or (vacuum is None and await _vacuum_due(store, settings, now)):
        async with store.exclusive() as db:
            try:
                await db.execute("VACUUM")
            except sqlite3.Error as exc:
                raise _storage_error(exc, "VACUUM") from None
        async with store.transaction() as tx:
            await tx.set_clock(VACUUM_CLOCK, iso(now))
        vacuumed = True
    async with store.exclusive() as db:
        await _checkpoint(db)

    cleaned = deleted = unreadable = 0
    if backup_dir is not None:
        purged = await _purged_refs(store)
        cleaned, deleted, unreadable = await asyncio.to_thread(
            clean_backups, backup_dir, settings, now, purged
        )
    result = _counts_of(
        due,
        backups_cleaned=cleaned,
        backups_deleted=deleted,
        backups_unreadable=unreadable,
        vacuumed=vacuumed,
    )
    log.info(
        "purge_done cases=%d unfinished=%d closed=%d escalated=%d drafts=%d deliveries=%d "
        "backups_cleaned=%d backups_deleted=%d vacuumed=%s",
        result.cases,
        result.unfinished_cases,
        result.closed_cases,
        result.escalated_cases,
        result.drafts,
        result.deliveries,
        result.backups_cleaned,
        result.backups_deleted,
        result.vacuumed,
    )
    if unreadable:
        log.warning("purge_backup_unreadable files=%d", unreadable)
    return result


async def _find_due(db: aiosqlite.Connection, params: dict[str, Any]) -> _Due:
    try:
        rows = list(await db.execute_fetchall(DUE_CASES_SQL, params))
        (drafts,) = await db.execute_fetchall(COUNT_DRAFTS_SQL, params)
        (deliveries,) = await db.execute_fetchall(COUNT_DELIVERIES_SQL, params)
    except sqlite3.Error as exc:
        raise _storage_error(exc, "the purge") from None
    return _due_from_rows(rows, int(drafts[0]), int(deliveries[0]))


async def _purge_live(
    db: aiosqlite.Connection, chain: Any, params: dict[str, Any], actor: str
) -> _Due:
    try:
        await db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise _storage_error(exc, "the purge") from None
    try:
        due = await _find_due(db, params)
        refs = json.dumps(due.refs)
        await db.execute(SHRED_KEYS_SQL, {"refs": refs})
        await db.execute(DELETE_CASES_SQL, {"refs": refs})
        await db.execute(DELETE_DRAFTS_SQL, params)
        await db.execute(DELETE_DELIVERIES_SQL, params)
        tx = Tx(db, chain)
        for rule, rule_refs in due.by_rule.items():
            for ref in rule_refs:
                await tx.audit(actor, "case_purged", ref, rule)
        # The periodic purge leaves no entry when it found nothing; anyone's manual run does.
        if due.refs or due.drafts or due.deliveries or actor != "bot":
            counts = _counts_of(due)
            detail = (
                f"unfinished={counts.unfinished_cases} closed={counts.closed_cases} "
                f"escalated={counts.escalated_cases} drafts={counts.drafts} "
                f"deliveries={counts.deliveries}"
            )
            await tx.audit(actor, "purge_run", detail=detail)
        await db.execute("COMMIT")
    except BaseException as exc:
        with contextlib.suppress(sqlite3.Error):
            await db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise _storage_error(exc, "the purge") from None
        raise
    return due


async def _checkpoint(db: aiosqlite.Connection) -> None:
    """Copy the WAL into the file and truncate it, so deleted content does not linger there."""
    try:
        rows = list(await db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)"))
    except sqlite3.Error as exc:
        raise _storage_error(exc, "the WAL checkpoint") from None
    if rows and int(rows[0][0]) != 0:
        # A reader still holds an older snapshot; the next purge truncates it.
        log.warning("purge_checkpoint_incomplete")


async def _vacuum_due(store: SqliteStore, settings: RetentionSettings, now: datetime) -> bool:
    last = await store.clock(VACUUM_CLOCK)
    return last is None or last <= iso(now - timedelta(hours=settings.vacuum_every_hours))


async def _purged_refs(store: SqliteStore) -> list[str]:
    async with store.exclusive() as db:
        rows = await db.execute_fetchall(PURGED_REFS_SQL)
    return [str(r[0]) for r in rows]


# ---------------------------------------------------------------------------------- backups
def purge_file(
    path: Path,
    settings: RetentionSettings,
    now: datetime,
    *,
    purged_before: Collection[str] = (),
    vacuum: bool = True,
) -> PurgeResult:
    """Apply the rules to a database file not in use by a store (a backup, a file about to be
    restored), through plain sqlite3. Its audit trail is left exactly as it was. Raises
    StorageError if the file is not a database with our schema."""
    params = cutoffs(settings, now, purged_before=purged_before)
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error:
        raise StorageError(f"cannot open {path.name}") from None
    try:
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(DUE_CASES_SQL, params).fetchall()
            drafts = int(conn.execute(COUNT_DRAFTS_SQL, params).fetchone()[0])
            deliveries = int(conn.execute(COUNT_DELIVERIES_SQL, params).fetchone()[0])
            due = _due_from_rows(rows, drafts, deliveries)
            refs = json.dumps(due.refs)
            conn.execute(SHRED_KEYS_SQL, {"refs": refs})
            conn.execute(DELETE_CASES_SQL, {"refs": refs})
            conn.execute(DELETE_DRAFTS_SQL, params)
            conn.execute(DELETE_DELIVERIES_SQL, params)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        changed = bool(due.refs or due.drafts or due.deliveries)
        if changed and vacuum:
            conn.execute("VACUUM")
        if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        raise _storage_error(exc, path.name) from None
    finally:
        conn.close()
    return _counts_of(due, vacuumed=changed and vacuum)


def backup_files(backup_dir: Path) -> list[Path]:
    """The backup files in a dir, oldest first (by the time in their names)."""
    if not backup_dir.is_dir():
        return []
    found = []
    for path in backup_dir.glob(BACKUP_GLOB):
        match = BACKUP_NAME.match(path.name)
        if match and path.is_file():
            found.append((match.group(1), int(match.group(2) or 0), path))
    return [path for _, _, path in sorted(found)]


def _excess_backups(backup_dir: Path, keep: int) -> list[Path]:
    files = backup_files(backup_dir)
    return files[: max(0, len(files) - keep)]


def prune_backups(backup_dir: Path, keep: int) -> int:
    """Delete the oldest backup files beyond `keep`; returns how many."""
    deleted = 0
    for path in _excess_backups(backup_dir, keep):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            deleted += 1
    if deleted:
        log.info("backups_deleted count=%d", deleted)
    return deleted


def clean_backups(
    backup_dir: Path,
    settings: RetentionSettings,
    now: datetime,
    purged_before: Collection[str] = (),
) -> tuple[int, int, int]:
    """Delete backups beyond `keep_backups`, then purge each one left by the same rules (and
    every case in `purged_before`). Returns (files cleaned, deleted, unreadable)."""
    deleted = prune_backups(backup_dir, settings.keep_backups)
    cleaned = unreadable = 0
    for path in backup_files(backup_dir):
        try:
            result = purge_file(path, settings, now, purged_before=purged_before)
        except StorageError:
            unreadable += 1
            continue
        if result.cases or result.drafts or result.deliveries:
            cleaned += 1
    return cleaned, deleted, unreadable


# ---------------------------------------------------------------------------------- the task
class RetentionWorker:
    """The running bot's periodic purge: one at start, then every `purge_every_minutes`."""

    def __init__(self, store: SqliteStore, settings: RetentionSettings, data_dir: Path) -> None:
        self.store = store
        self.settings = settings
        self.backup_dir = settings.backups_in(data_dir)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="retention-purge")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stop.set()
        task, self._task = self._task, None
        try:
            # A purge in progress is one transaction: let it finish rather than cut it.
            await asyncio.wait_for(asyncio.shield(task), timeout=30)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        interval = self.settings.purge_every_minutes * 60
        while not self._stop.is_set():
            try:
                await purge(self.store, self.settings, backup_dir=self.backup_dir)
            except Exception as exc:  # a failed purge must never stop the bot
                log.error("purge_failed error=%s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)


def _storage_error(exc: sqlite3.Error, what: str) -> StorageError:
    message = str(exc).lower()
    if "locked" in message or "busy" in message:
        return StorageBusyError(f"the database stayed locked during {what}; try again")
    if "not a database" in message or "no such table" in message or "malformed" in message:
        return StorageError(f"{what}: not a safeguard database ({type(exc).__name__})")
    return StorageError(f"database error during {what}: {type(exc).__name__}")
