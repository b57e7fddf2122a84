"""The embedded store: one SQLite file (WAL, foreign keys, secure_delete) through aiosqlite.

Everything durable goes through this class and its `Tx`; their public methods are the storage
interface a PostgreSQL store would implement for operators who need two hosts.
Writes that belong together (an answer, its escalation and its outbox row, and the update id
that caused them) happen in one `transaction()`, so a crash leaves all or nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from bot.errors import NotFoundError, StorageBusyError, StorageError
from bot.storage.base import CaseRow, EscalationRow, OutboxItem, RecordRow

DB_NAME = "safeguard.sqlite3"
BUSY_TIMEOUT_MS = 5000


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("bot.storage") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


class SqliteStore:
    def __init__(self, data_dir: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = data_dir / DB_NAME
        self.busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        # One connection, one writer: transactions and reads take turns in this process.
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        old_umask = os.umask(0o077)
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {self.path}: {exc}") from None
        finally:
            os.umask(old_umask)
        db = self._db
        await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA foreign_keys = ON")
        await db.execute("PRAGMA secure_delete = ON")
        await db.execute("PRAGMA synchronous = FULL")
        await self._migrate()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _migrate(self) -> None:
        db = self._conn
        async with db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        for version, script in _migrations():
            if version <= current:
                continue
            await db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(script):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {version}")
                await db.execute("COMMIT")
            except Exception:
                await db.execute("ROLLBACK")
                raise

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StorageError("store is not open")
        return self._db

    async def pragma(self, name: str) -> Any:
        async with self._lock, self._conn.execute(f"PRAGMA {name}") as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ transactions
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:
            db = self._conn
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise _storage_error(exc) from None
            try:
                yield Tx(db)
                await db.execute("COMMIT")
            except sqlite3.Error as exc:
                await _rollback(db)
                raise _storage_error(exc) from None
            except BaseException:
                await _rollback(db)
                raise

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock:
            try:
                async with self._conn.execute(sql, params) as cur:
                    return list(await cur.fetchall())
            except sqlite3.Error as exc:
                raise _storage_error(exc) from None

    # ------------------------------------------------------------------ reads
    async def load_draft(self, pseudonym: str) -> bytes | None:
        rows = await self._fetch(
            "SELECT sealed FROM conversations WHERE pseudonym = ?", (pseudonym,)
        )
        return bytes(rows[0][0]) if rows else None

    async def was_processed(self, update_id: int) -> bool:
        rows = await self._fetch(
            "SELECT 1 FROM processed_updates WHERE update_id = ?", (update_id,)
        )
        return bool(rows)

    async def get_case(self, ref: str) -> CaseRow:
        rows = await self._fetch(f"SELECT {CaseRow.COLUMNS} FROM cases WHERE ref = ?", (ref,))
        if not rows:
            raise NotFoundError(f"no case {ref}")
        return CaseRow.from_row(rows[0])

    async def list_cases(self) -> list[CaseRow]:
        rows = await self._fetch(f"SELECT {CaseRow.COLUMNS} FROM cases ORDER BY created_at")
        return [CaseRow.from_row(r) for r in rows]

    async def records_for(self, ref: str) -> list[RecordRow]:
        rows = await self._fetch(
            "SELECT id, case_ref, kind, created_at, sealed FROM records "
            "WHERE case_ref = ? ORDER BY id",
            (ref,),
        )
        return [RecordRow(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]

    async def escalations_for(self, ref: str) -> list[EscalationRow]:
        rows = await self._fetch(
            f"SELECT {EscalationRow.COLUMNS} FROM escalations WHERE case_ref = ? ORDER BY id",
            (ref,),
        )
        return [EscalationRow.from_row(r) for r in rows]

    async def get_escalation(self, escalation_id: int) -> EscalationRow:
        rows = await self._fetch(
            f"SELECT {EscalationRow.COLUMNS} FROM escalations WHERE id = ?", (escalation_id,)
        )
        if not rows:
            raise NotFoundError(f"no escalation {escalation_id}")
        return EscalationRow.from_row(rows[0])

    async def forget_old_updates(self, older_than: timedelta) -> None:
        """Drop de-duplication marks Telegram can no longer re-deliver."""
        cutoff = (datetime.now(UTC) - older_than).isoformat(timespec="milliseconds")
        async with self.transaction() as tx:
            await tx.forget_updates_before(cutoff)

    async def reply_handle(self, ref: str) -> bytes | None:
        rows = await self._fetch("SELECT reply_handle FROM cases WHERE ref = ?", (ref,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    async def due_outbox(self, limit: int = 20) -> list[OutboxItem]:
        """Undelivered alerts whose next attempt is due; immediate before high, oldest first."""
        rows = await self._fetch(
            "SELECT o.id, o.escalation_id, o.attempts, o.message_id, e.case_ref, e.level "
            "FROM outbox o JOIN escalations e ON e.id = o.escalation_id "
            "WHERE o.sent_at IS NULL AND o.next_attempt_at <= ? "
            "ORDER BY CASE e.level WHEN 'immediate' THEN 0 ELSE 1 END, o.id LIMIT ?",
            (now_iso(), limit),
        )
        return [OutboxItem(*r) for r in rows]

    async def outbox_message_ids(self, escalation_id: int) -> list[int]:
        rows = await self._fetch(
            "SELECT message_id FROM outbox WHERE escalation_id = ? AND message_id IS NOT NULL",
            (escalation_id,),
        )
        return [int(r[0]) for r in rows]


class Tx:
    """The write side of the store, used only inside `SqliteStore.transaction()`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._db.execute(sql, params) as cur:
            row = await cur.fetchone()
        return row

    async def mark_processed(self, update_id: int) -> None:
        await self._db.execute(
            "INSERT OR IGNORE INTO processed_updates (update_id, processed_at) VALUES (?, ?)",
            (update_id, now_iso()),
        )

    async def save_draft(self, pseudonym: str, sealed: bytes) -> None:
        await self._db.execute(
            "INSERT INTO conversations (pseudonym, sealed, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(pseudonym) DO UPDATE SET sealed = excluded.sealed, "
            "updated_at = excluded.updated_at",
            (pseudonym, sealed, now_iso()),
        )

    async def erase_draft(self, pseudonym: str) -> None:
        await self._db.execute("DELETE FROM conversations WHERE pseudonym = ?", (pseudonym,))

    async def ensure_case(self, ref: str, reporter: str, audience: str | None) -> None:
        await self._db.execute(
            "INSERT INTO cases (ref, reporter, audience, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(ref) DO UPDATE SET audience = COALESCE(excluded.audience, audience)",
            (ref, reporter, audience, now_iso()),
        )

    async def raise_case_level(self, ref: str, level: str) -> None:
        order = (
            "CASE {col} WHEN 'immediate' THEN 3 WHEN 'high' THEN 2 WHEN 'routine' THEN 1 ELSE 0 END"
        )
        await self._db.execute(
            f"UPDATE cases SET level = ? WHERE ref = ? AND {order.format(col='level')} < "
            f"{order.format(col='?')}",
            (level, ref, level),
        )

    async def mark_submitted(self, ref: str) -> None:
        await self._db.execute("UPDATE cases SET submitted_at = ? WHERE ref = ?", (now_iso(), ref))

    async def add_record(self, ref: str, kind: str, sealed: bytes) -> int:
        cur = await self._db.execute(
            "INSERT INTO records (case_ref, kind, created_at, sealed) VALUES (?, ?, ?, ?)",
            (ref, kind, now_iso(), sealed),
        )
        return int(cur.lastrowid or 0)

    async def set_reply_handle(self, ref: str, sealed: bytes | None) -> None:
        await self._db.execute("UPDATE cases SET reply_handle = ? WHERE ref = ?", (sealed, ref))

    async def add_escalation(self, ref: str, level: str, reasons: Sequence[str]) -> int:
        """The escalation and its outbox row, together: on disk before anything is sent."""
        created = now_iso()
        cur = await self._db.execute(
            "INSERT INTO escalations (case_ref, level, reasons, created_at) VALUES (?, ?, ?, ?)",
            (ref, level, json.dumps(list(reasons)), created),
        )
        escalation_id = int(cur.lastrowid or 0)
        await self._db.execute(
            "INSERT INTO outbox (escalation_id, created_at, next_attempt_at) VALUES (?, ?, ?)",
            (escalation_id, created, created),
        )
        return escalation_id

    async def outbox_sent(self, outbox_id: int, message_id: int) -> None:
        await self._db.execute(
            "UPDATE outbox SET sent_at = ?, message_id = ?, attempts = attempts + 1 WHERE id = ?",
            (now_iso(), message_id, outbox_id),
        )

    async def outbox_failed(self, outbox_id: int, error: str, retry_in: float) -> None:
        next_at = (datetime.now(UTC) + timedelta(seconds=retry_in)).isoformat(
            timespec="milliseconds"
        )
        await self._db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
            "WHERE id = ?",
            (error, next_at, outbox_id),
        )

    async def acknowledge(self, escalation_id: int, by: str) -> bool:
        """True if this call acknowledged it; False if someone already had."""
        cur = await self._db.execute(
            "UPDATE escalations SET acknowledged_at = ?, acknowledged_by = ? "
            "WHERE id = ? AND acknowledged_at IS NULL",
            (now_iso(), by, escalation_id),
        )
        return cur.rowcount == 1

    async def forget_updates_before(self, cutoff_iso: str) -> None:
        await self._db.execute(
            "DELETE FROM processed_updates WHERE processed_at < ?", (cutoff_iso,)
        )


def _split_sql(script: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


async def _rollback(db: aiosqlite.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        await db.execute("ROLLBACK")


def _storage_error(exc: sqlite3.Error) -> StorageError:
    message = str(exc).lower()
    if "locked" in message or "busy" in message:
        return StorageBusyError("the database stayed locked; try again")
    if "disk" in message or "full" in message:
        return StorageError("the database could not be written (disk full or I/O error)")
    return StorageError(f"database error: {type(exc).__name__}")
