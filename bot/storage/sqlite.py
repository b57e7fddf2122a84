"""The embedded store: one SQLite file (WAL, foreign keys, secure_delete) through aiosqlite.

Everything durable goes through this class and its `Tx`; their public methods are the storage
interface a PostgreSQL store would implement for operators who need two hosts.
Writes that belong together (an answer, its escalation and its outbox row, and the update id
that caused them) happen in one `transaction()`, so a crash leaves all or nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from bot.errors import NotFoundError, StorageBusyError, StorageError
from bot.storage import audit
from bot.storage.base import (
    CaseEvent,
    CaseRow,
    DeliveryRow,
    EscalationRow,
    PagerHolder,
    RecordRow,
)

if TYPE_CHECKING:
    from bot.crypto import BotCrypto, SealedRecord, SecretChecks

DB_NAME = "safeguard.sqlite3"
BUSY_TIMEOUT_MS = 5000
_SECRET_CHECKS_SQL = "SELECT generation, secret, check_value FROM bot_secret_checks"

Statement = tuple[str, Sequence[Any]]  # SQL and its parameters


def now_iso() -> str:
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    """Timestamps are stored as UTC ISO-8601 text, so they sort and compare as strings."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("bot.storage") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


class _PriorityLock:
    """An asyncio lock whose urgent waiters go first (first come, first served within each).

    The delivery worker's transactions are urgent: an alert must not wait behind a hundred
    reporters' answers for its turn to be marked as sending.
    """

    def __init__(self) -> None:
        self._locked = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = 0

    async def acquire(self, urgent: bool = False) -> None:
        if not self._locked and not self._waiters:
            self._locked = True
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._waiters, (0 if urgent else 1, self._seq, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed the lock just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)  # ownership passes straight to the next waiter
                return
        self._locked = False


class SqliteStore:
    def __init__(
        self,
        data_dir: Path,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        *,
        chain: audit.ChainFn | None = None,
        secrets: BotCrypto | None = None,
    ) -> None:
        """`chain` (`BotCrypto.chain_audit_entry`) signs the audit trail; a store opened
        without it can read, and write anything but staff actions and key operations.

        `secrets` (the bot's `BotCrypto`) is how the bot and every command holding its secrets
        open the store: it signs the audit trail, and opening refuses a bot_secrets.json that
        is not the one this database was used with (`_match_bot_secrets`)."""
        self.path = data_dir / DB_NAME
        self.busy_timeout_ms = busy_timeout_ms
        self.secrets = secrets
        self.chain = chain if chain is not None or secrets is None else secrets.chain_audit_entry
        self._db: aiosqlite.Connection | None = None
        # Reads go through a second connection: in WAL mode they never wait for a writer.
        self._reader: aiosqlite.Connection | None = None
        # One writer: transactions take turns in this process, urgent ones first.
        self._lock = _PriorityLock()
        self._read_lock = asyncio.Lock()
        # Writes-only transactions waiting to be committed together (`transaction(grouped=True)`).
        self._group: list[tuple[list[Statement], asyncio.Future[None]]] = []
        self._group_committer: asyncio.Task[None] | None = None

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
        try:
            await self._migrate()
            if self.secrets is not None:
                await self._match_bot_secrets(self.secrets)
        except BaseException:
            await self.close()
            raise
        try:
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {self.path}: {exc}") from None
        await self._reader.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        await self._reader.execute("PRAGMA query_only = ON")

    async def close(self) -> None:
        if self._group_committer is not None:
            with contextlib.suppress(Exception):
                await self._group_committer
            self._group_committer = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
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

    async def _match_bot_secrets(self, secrets: BotCrypto) -> None:
        """Refuse to open with a bot_secrets.json other than the one this database was used
        with (`BotCrypto.match_secret_checks` decides, raising KeyFileCorruptError); record
        the check values of secrets it has not seen: on first use, on a database from before
        they were kept, and after `keys rotate`. Nothing is written when they all match."""
        if not secrets.match_secret_checks(await _recorded_checks(self._conn)):
            return
        async with self.transaction() as tx:
            await tx.record_secret_checks(secrets)

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StorageError("store is not open")
        return self._db

    async def pragma(self, name: str) -> Any:
        await self._lock.acquire()
        try:
            async with self._conn.execute(f"PRAGMA {name}") as cur:
                row = await cur.fetchone()
        finally:
            self._lock.release()
        return row[0] if row else None

    # ------------------------------------------------------------------ transactions
    @asynccontextmanager
    async def transaction(
        self, urgent: bool = False, *, grouped: bool = False
    ) -> AsyncIterator[Tx]:
        """One write transaction. `urgent` (the delivery worker) goes before waiting turns.

        `grouped`: for writes only (no reads, no row ids), as most reporters' turns are. It is
        committed together with the other grouped transactions waiting at that moment, all or
        nothing, and returns once on disk. Under load that is one commit (and one fsync) for
        tens of turns instead of one each: the write turn was the bottleneck, not the CPU.
        """
        if grouped:
            tx = Tx(self._conn, self.chain, writes_only=True)
            yield tx
            await self._commit_with_group(tx.take_queued())
            return
        await self._lock.acquire(urgent)
        try:
            db = self._conn
            tx = Tx(db, self.chain)
            # Sent with the first statement that needs an answer, or with COMMIT: most turns
            # (save the draft, mark the update) are one trip to the writer thread, and this
            # process's write turn is held for one trip instead of four.
            tx.queue("BEGIN IMMEDIATE")
            try:
                yield tx
                tx.queue("COMMIT")
                await tx.flush()
            except sqlite3.Error as exc:
                await _rollback(db)
                raise _storage_error(exc) from None
            except BaseException:
                await _rollback(db)
                raise
        finally:
            self._lock.release()

    async def _commit_with_group(self, statements: list[Statement]) -> None:
        if not statements:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._group.append((statements, done))
        if self._group_committer is None or self._group_committer.done():
            self._group_committer = asyncio.create_task(self._commit_groups())
        await done

    async def _commit_groups(self) -> None:
        """Commit whatever grouped transactions are waiting, until none are. While one group
        commits (or waits for the write turn), the next one gathers."""
        while self._group:
            await self._lock.acquire()
            group, self._group = self._group, []
            try:
                statements: list[Statement] = [("BEGIN IMMEDIATE", ())]
                statements += [s for batch, _ in group for s in batch]
                statements.append(("COMMIT", ()))
                await _run_in_writer_thread(self._conn, _execute_all, statements)
            except BaseException as exc:
                await _rollback(self._conn)
                for _, done in group:
                    if not done.done():
                        error = _storage_error(exc) if isinstance(exc, sqlite3.Error) else exc
                        done.set_exception(error)
                if not isinstance(exc, Exception):
                    raise
                continue
            finally:
                self._lock.release()
            for _, done in group:
                if not done.done():
                    done.set_result(None)

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[aiosqlite.Connection]:
        """The writer connection, with this process's write turn held and no transaction
        open: for maintenance (purge, VACUUM, checkpoint, online backup) that manages its own."""
        await self._lock.acquire()
        try:
            yield self._conn
        finally:
            self._lock.release()

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        reader = self._reader
        if reader is None:
            raise StorageError("store is not open")
        async with self._read_lock:
            try:
                # One trip to aiosqlite's thread, not three (execute, fetch, close).
                return list(await reader.execute_fetchall(sql, params))
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

    async def cases_by_ref(self, refs: Sequence[str]) -> dict[str, CaseRow]:
        rows = await self._fetch(
            f"SELECT {CaseRow.COLUMNS} FROM cases WHERE ref IN ({_marks(refs)})", tuple(refs)
        )
        return {c.ref: c for c in map(CaseRow.from_row, rows)}

    async def escalations_by_id(self, ids: Sequence[int]) -> list[EscalationRow]:
        rows = await self._fetch(
            f"SELECT {EscalationRow.COLUMNS} FROM escalations WHERE id IN ({_marks(ids)})",
            tuple(ids),
        )
        found = {e.id: e for e in map(EscalationRow.from_row, rows)}
        return [found[i] for i in ids if i in found]

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

    async def wrapped_keys(self, ref: str, recipient: str) -> dict[bytes, bytes]:
        """A staff member's wrapped data keys for a case's records, by key id."""
        rows = await self._fetch(
            "SELECT key_id, wrapped FROM sealed_keys WHERE case_ref = ? AND recipient = ?",
            (ref, recipient),
        )
        return {bytes(r[0]): bytes(r[1]) for r in rows}

    async def recipients_in_use(self) -> dict[str, int]:
        """How many wrapped data keys each staff key fingerprint holds."""
        rows = await self._fetch(
            "SELECT recipient, COUNT(*) FROM sealed_keys GROUP BY recipient ORDER BY recipient"
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def verify_audit(self) -> audit.AuditReport:
        if self.chain is None:
            raise StorageError("verifying the audit trail needs the bot's secrets")
        async with self._read_lock:
            reader = self._reader
            if reader is None:
                raise StorageError("store is not open")
            return await audit.verify(reader, self.chain)

    async def audit_entries(self, ref: str | None = None) -> list[audit.AuditEntry]:
        async with self._read_lock:
            reader = self._reader
            if reader is None:
                raise StorageError("store is not open")
            return await audit.entries(reader, ref)

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

    async def open_cases(self) -> list[CaseRow]:
        rows = await self._fetch(
            f"SELECT {CaseRow.COLUMNS} FROM cases WHERE status = 'open' ORDER BY created_at"
        )
        return [CaseRow.from_row(r) for r in rows]

    async def unacknowledged(self) -> list[EscalationRow]:
        rows = await self._fetch(
            f"SELECT {EscalationRow.COLUMNS} FROM escalations "
            "WHERE acknowledged_at IS NULL ORDER BY id"
        )
        return [EscalationRow.from_row(r) for r in rows]

    async def due_escalations(self, now: str) -> list[EscalationRow]:
        """Unacknowledged alerts whose next paging step has come due."""
        rows = await self._fetch(
            f"SELECT {EscalationRow.COLUMNS} FROM escalations "
            "WHERE acknowledged_at IS NULL AND next_step_at IS NOT NULL AND next_step_at <= ? "
            "ORDER BY CASE level WHEN 'immediate' THEN 0 ELSE 1 END, id",
            (now,),
        )
        return [EscalationRow.from_row(r) for r in rows]

    async def next_timer(self) -> str | None:
        """The earliest pending paging step, so the worker can sleep until then."""
        rows = await self._fetch(
            "SELECT MIN(next_step_at) FROM escalations "
            "WHERE acknowledged_at IS NULL AND next_step_at IS NOT NULL"
        )
        return rows[0][0] if rows else None

    async def due_deliveries(self, now: str, limit: int = 100) -> list[DeliveryRow]:
        """Messages to staff not yet sent, most urgent first, oldest first."""
        rows = await self._fetch(
            f"SELECT {DeliveryRow.COLUMNS} FROM deliveries "
            "WHERE sent_at IS NULL AND cancelled_at IS NULL AND next_attempt_at <= ? "
            "ORDER BY priority, id LIMIT ?",
            (now, limit),
        )
        return [DeliveryRow.from_row(r) for r in rows]

    async def next_delivery_at(self) -> str | None:
        rows = await self._fetch(
            "SELECT MIN(next_attempt_at) FROM deliveries "
            "WHERE sent_at IS NULL AND cancelled_at IS NULL"
        )
        return rows[0][0] if rows else None

    async def deliveries_for_message(self, recipient: str, message_id: int) -> list[DeliveryRow]:
        """Every row shown in one sent message (several when alerts were combined)."""
        rows = await self._fetch(
            f"SELECT {DeliveryRow.COLUMNS} FROM deliveries "
            "WHERE recipient = ? AND message_id = ? ORDER BY priority, id",
            (recipient, message_id),
        )
        return [DeliveryRow.from_row(r) for r in rows]

    async def sent_alert_messages(self, ref: str) -> list[tuple[str, int]]:
        """(recipient, message id) of every alert message sent about a case, to edit on ack."""
        rows = await self._fetch(
            "SELECT DISTINCT recipient, message_id FROM deliveries "
            "WHERE case_ref = ? AND kind = 'alert' AND message_id IS NOT NULL",
            (ref,),
        )
        return [(str(r[0]), int(r[1])) for r in rows]

    async def alert_shown_in(self, escalation_id: int, recipient: str, message_id: int) -> bool:
        """Whether this alert really was in that message: a button's data is only trusted if
        it names an alert the bot put on that very message."""
        if not 0 < escalation_id < 2**63 or not -(2**63) <= message_id < 2**63:
            return False  # forged: no such row can exist, and SQLite integers are 64-bit
        rows = await self._fetch(
            "SELECT 1 FROM deliveries WHERE escalation_id = ? AND recipient = ? "
            "AND message_id = ? AND kind = 'alert'",
            (escalation_id, recipient, message_id),
        )
        return bool(rows)

    async def case_events(self, ref: str) -> list[CaseEvent]:
        rows = await self._fetch(
            f"SELECT {CaseEvent.COLUMNS} FROM case_events WHERE case_ref = ? ORDER BY id", (ref,)
        )
        return [CaseEvent.from_row(r) for r in rows]

    async def pager(self) -> PagerHolder | None:
        rows = await self._fetch("SELECT name, since, until FROM pager WHERE id = 1")
        return PagerHolder(*rows[0]) if rows else None

    async def clock(self, name: str) -> str | None:
        rows = await self._fetch("SELECT at FROM clock WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    async def oldest_undelivered_alert(self) -> str | None:
        rows = await self._fetch(
            "SELECT MIN(created_at) FROM deliveries "
            "WHERE kind = 'alert' AND sent_at IS NULL AND cancelled_at IS NULL"
        )
        return rows[0][0] if rows else None


class Tx:
    """The write side of the store, used only inside `SqliteStore.transaction()`."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        chain: audit.ChainFn | None = None,
        *,
        writes_only: bool = False,
    ) -> None:
        self._raw_db = db
        self._chain = chain
        self._writes_only = writes_only
        self._queued: list[Statement] = []

    def queue(self, sql: str, params: Sequence[Any] = ()) -> None:
        """A write whose result nobody reads: sent, in order, with the next `flush`."""
        self._queued.append((sql, params))

    def take_queued(self) -> list[Statement]:
        statements, self._queued = self._queued, []
        return statements

    async def flush(self) -> None:
        """Send the queued statements in one trip to aiosqlite's thread."""
        if self._writes_only:
            raise StorageError("a grouped transaction only queues writes; it cannot read")
        if self._queued:
            statements, self._queued = self._queued, []
            await _run_in_writer_thread(self._raw_db, _execute_all, statements)

    async def _db(self) -> aiosqlite.Connection:
        """The connection, once every queued write before this use has been sent."""
        await self.flush()
        return self._raw_db

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Cursor:
        return await (await self._db()).execute(sql, params)

    async def _execute_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        await (await self._db()).executemany(sql, params)

    async def _fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(await (await self._db()).execute_fetchall(sql, params))

    async def record_secret_checks(self, secrets: BotCrypto) -> None:
        """Record the check values of the bot's secrets this database has not seen (checked
        again inside the transaction: another process may have recorded them meanwhile)."""
        new = secrets.match_secret_checks(await _recorded_checks(await self._db()))
        await self._execute_many(
            "INSERT INTO bot_secret_checks (generation, secret, check_value, recorded_at) "
            "VALUES (?, ?, ?, ?)",
            [(gen, name, value, now_iso()) for (gen, name), value in sorted(new.items())],
        )

    async def audit(
        self, actor: str, action: str, case_ref: str | None = None, detail: str | None = None
    ) -> None:
        """Append to the hash-chained audit trail: who did what to which case. No content."""
        if self._chain is None:
            raise StorageError("the audit trail needs the bot's secrets to sign it")
        await audit.append(
            await self._db(), self._chain, now_iso(), actor, action, case_ref, detail
        )

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._fetch_all(sql, params)
        return next(iter(rows), None)

    async def mark_processed(self, update_id: int) -> None:
        self.queue(
            "INSERT OR IGNORE INTO processed_updates (update_id, processed_at) VALUES (?, ?)",
            (update_id, now_iso()),
        )

    async def save_draft(self, pseudonym: str, sealed: bytes) -> None:
        self.queue(
            "INSERT INTO conversations (pseudonym, sealed, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(pseudonym) DO UPDATE SET sealed = excluded.sealed, "
            "updated_at = excluded.updated_at",
            (pseudonym, sealed, now_iso()),
        )

    async def erase_draft(self, pseudonym: str) -> None:
        self.queue("DELETE FROM conversations WHERE pseudonym = ?", (pseudonym,))

    async def ensure_case(self, ref: str, reporter: str, audience: str | None) -> None:
        await self._execute(
            "INSERT INTO cases (ref, reporter, audience, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(ref) DO UPDATE SET audience = COALESCE(excluded.audience, audience)",
            (ref, reporter, audience, now_iso()),
        )

    async def raise_case_level(self, ref: str, level: str) -> None:
        order = (
            "CASE {col} WHEN 'immediate' THEN 3 WHEN 'high' THEN 2 WHEN 'routine' THEN 1 ELSE 0 END"
        )
        await self._execute(
            f"UPDATE cases SET level = ? WHERE ref = ? AND {order.format(col='level')} < "
            f"{order.format(col='?')}",
            (level, ref, level),
        )

    async def reports_since(self, reporter: str, since: str) -> int:
        """How many reports one reporter (pseudonym) has sent since `since`, this one too."""
        row = await self._one(
            "SELECT COUNT(*) FROM cases WHERE reporter = ? AND submitted_at >= ?",
            (reporter, since),
        )
        return int(row[0])

    async def mark_submitted(self, ref: str) -> None:
        await self._execute("UPDATE cases SET submitted_at = ? WHERE ref = ?", (now_iso(), ref))

    async def add_record(self, ref: str, kind: str, sealed: SealedRecord) -> int:
        cur = await self._execute(
            "INSERT INTO records (case_ref, kind, created_at, sealed) VALUES (?, ?, ?, ?)",
            (ref, kind, now_iso(), sealed.blob),
        )
        await self._add_wrapped_keys(ref, sealed)
        return int(cur.lastrowid or 0)

    async def _add_wrapped_keys(self, ref: str, sealed: SealedRecord) -> None:
        await self._execute_many(
            "INSERT INTO sealed_keys (key_id, case_ref, recipient, wrapped) VALUES (?, ?, ?, ?)",
            [(sealed.key_id, ref, fp, wrapped) for fp, wrapped in sealed.wrapped_keys.items()],
        )

    # ------------------------------------------------------------------ key ceremonies
    async def wrapped_keys_of(self, recipient: str) -> list[tuple[bytes, str, bytes]]:
        """(key id, case, wrapped key) of every data key sealed to one staff key."""
        rows = await self._fetch_all(
            "SELECT key_id, case_ref, wrapped FROM sealed_keys WHERE recipient = ?",
            (recipient,),
        )
        return [(bytes(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    async def add_wrapped_key(
        self, key_id: bytes, ref: str, recipient: str, wrapped: bytes
    ) -> None:
        await self._execute(
            "INSERT OR REPLACE INTO sealed_keys (key_id, case_ref, recipient, wrapped) "
            "VALUES (?, ?, ?, ?)",
            (key_id, ref, recipient, wrapped),
        )

    async def forget_recipient(self, recipient: str) -> int:
        """Delete every data key sealed to one staff key (a leaver, a rotated key)."""
        cur = await self._execute("DELETE FROM sealed_keys WHERE recipient = ?", (recipient,))
        return cur.rowcount

    async def forget_recipients_except(self, current: Sequence[str]) -> int:
        """Delete data keys sealed to any staff key not in `current` (all leavers)."""
        cur = await self._execute(
            f"DELETE FROM sealed_keys WHERE recipient NOT IN ({_marks(current)})", tuple(current)
        )
        return cur.rowcount

    async def readable_only_by(self, recipient: str) -> int:
        """How many records nobody but this staff key can open."""
        row = await self._one(
            "SELECT COUNT(*) FROM sealed_keys k WHERE k.recipient = ? AND NOT EXISTS "
            "(SELECT 1 FROM sealed_keys o WHERE o.key_id = k.key_id AND o.recipient != ?)",
            (recipient, recipient),
        )
        return int(row[0])

    async def short_lived_sealed(self) -> list[tuple[str, str, int, str, str, bytes]]:
        """Everything sealed under the bot's own secrets, to seal again after a rotation:
        (table, column, rowid, kind, what it is bound to, blob)."""
        queries = (
            ("conversations", "sealed", "draft", "pseudonym"),
            ("cases", "reply_handle", "reply_handle", "ref"),
            ("escalations", "trigger_sealed", "trigger", "case_ref"),
            ("deliveries", "body_sealed", "followup", "case_ref"),
            ("case_events", "for_reporter", "reply", "case_ref"),
        )
        found = []
        for table, column, kind, owner in queries:
            rows = await self._fetch_all(
                f"SELECT rowid, {owner}, {column} FROM {table} WHERE {column} IS NOT NULL"
            )
            found += [(table, column, int(r[0]), kind, str(r[1]), bytes(r[2])) for r in rows]
        return found

    async def replace_sealed(self, table: str, column: str, rowid: int, blob: bytes) -> None:
        await self._execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (blob, rowid))

    async def set_reply_handle(self, ref: str, sealed: bytes | None) -> None:
        await self._execute("UPDATE cases SET reply_handle = ? WHERE ref = ?", (sealed, ref))

    async def add_escalation(
        self,
        ref: str,
        level: str,
        reasons: Sequence[str],
        paging_from: str | None = None,
        trigger_sealed: bytes | None = None,
    ) -> int:
        """A new alert with its paging timer due at `paging_from` (now by default). The
        delivery worker fires step 0 from it; nothing is sent before this is committed."""
        created = now_iso()
        cur = await self._execute(
            "INSERT INTO escalations (case_ref, level, reasons, created_at, step, next_step_at, "
            "paging_from, trigger_sealed) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
            (
                ref,
                level,
                json.dumps(list(reasons)),
                created,
                paging_from or created,
                paging_from or created,
                trigger_sealed,
            ),
        )
        return int(cur.lastrowid or 0)

    async def fire_step(
        self,
        escalation_id: int,
        case_ref: str,
        fired_before: int,
        step: int,
        next_step_at: str | None,
        recipients: Sequence[str],
        priority: int,
        fired_at: str | None = None,
    ) -> bool:
        """Record that paging step `step` fired: its deliveries and the next timer, at once.

        Compare-and-set on the steps already fired (`fired_before`), so two workers (or a
        restart racing a slow commit) cannot fire the same step twice.
        """
        cur = await self._execute(
            "UPDATE escalations SET step = ?, next_step_at = ? "
            "WHERE id = ? AND step = ? AND acknowledged_at IS NULL",
            (step + 1, next_step_at, escalation_id, fired_before),
        )
        if cur.rowcount != 1:
            return False
        for recipient in recipients:
            await self.add_delivery(
                "alert",
                recipient,
                priority,
                case_ref=case_ref,
                escalation_id=escalation_id,
                due=fired_at,
            )
        return True

    async def pager(self) -> PagerHolder | None:
        row = await self._one("SELECT name, since, until FROM pager WHERE id = 1")
        return PagerHolder(*row) if row else None

    async def add_delivery(
        self,
        kind: str,
        recipient: str,
        priority: int,
        *,
        case_ref: str | None = None,
        escalation_id: int | None = None,
        body_sealed: bytes | None = None,
        due: str | None = None,
        detail: str | None = None,
    ) -> int:
        created = due or now_iso()
        cur = await self._execute(
            "INSERT INTO deliveries (kind, escalation_id, case_ref, recipient, priority, "
            "body_sealed, created_at, next_attempt_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                kind,
                escalation_id,
                case_ref,
                recipient,
                priority,
                body_sealed,
                created,
                created,
                detail,
            ),
        )
        return int(cur.lastrowid or 0)

    async def deliveries_sending(self, ids: Sequence[int]) -> set[int]:
        """Mark rows as being sent; returns those still to send (not sent or cancelled since
        they were read), so a row acknowledged meanwhile is not sent."""
        rows = await self._fetch_all(
            f"UPDATE deliveries SET sending_since = ? WHERE id IN ({_marks(ids)}) "
            "AND sent_at IS NULL AND cancelled_at IS NULL RETURNING id",
            (now_iso(), *ids),
        )
        return {int(r[0]) for r in rows}

    async def deliveries_sent(self, ids: Sequence[int], message_id: int) -> None:
        # The words of a follow-up were only kept to be sent: gone now it is.
        await self._execute(
            "UPDATE deliveries SET sent_at = ?, message_id = ?, attempts = attempts + 1, "
            f"body_sealed = NULL WHERE id IN ({_marks(ids)})",
            (now_iso(), message_id, *ids),
        )

    async def deliveries_failed(
        self,
        ids: Sequence[int],
        error: str,
        retry_in: float,
        keep_sending: bool = False,
        count_attempt: bool = True,
    ) -> None:
        """Try again in `retry_in` seconds. `keep_sending`: the request may have gone out
        (a timeout), so the retry must say it may be a repeat. `count_attempt` False for a
        429, which is Telegram pacing us, not a failure to back off from."""
        next_at = iso(datetime.now(UTC) + timedelta(seconds=retry_in))
        clear = "" if keep_sending else ", sending_since = NULL"
        attempts = "attempts + 1" if count_attempt else "attempts"
        await self._execute(
            f"UPDATE deliveries SET attempts = {attempts}, last_error = ?, next_attempt_at = ?"
            f"{clear} WHERE id IN ({_marks(ids)})",
            (error, next_at, *ids),
        )

    async def deliveries_cancelled(self, ids: Sequence[int], error: str) -> None:
        await self._execute(
            "UPDATE deliveries SET cancelled_at = ?, last_error = ?, body_sealed = NULL "
            f"WHERE id IN ({_marks(ids)})",
            (now_iso(), error, *ids),
        )

    async def acknowledge(self, ref: str, by: str) -> list[int]:
        """Stop paging for a case: every open alert of it acknowledged by `by`, their timers
        cleared, messages not yet sent cancelled. Returns the escalation ids it acknowledged
        (empty if someone else got there first)."""
        now = now_iso()
        rows = await self._fetch_all(
            "SELECT id FROM escalations WHERE case_ref = ? AND acknowledged_at IS NULL", (ref,)
        )
        ids = [int(r[0]) for r in rows]
        if not ids:
            return []
        await self._execute(
            "UPDATE escalations SET acknowledged_at = ?, acknowledged_by = ?, "
            "next_step_at = NULL, trigger_sealed = NULL "
            f"WHERE id IN ({_marks(ids)})",
            (now, by, *ids),
        )
        await self._execute(
            "UPDATE deliveries SET cancelled_at = ?, body_sealed = NULL "
            f"WHERE escalation_id IN ({_marks(ids)}) AND sent_at IS NULL AND cancelled_at IS NULL",
            (now, *ids),
        )
        return ids

    async def assigned_to(self, ref: str) -> str | None:
        row = await self._one("SELECT assigned_to FROM cases WHERE ref = ?", (ref,))
        return str(row[0]) if row and row[0] is not None else None

    async def assign(self, ref: str, name: str) -> None:
        await self._execute("UPDATE cases SET assigned_to = ? WHERE ref = ?", (name, ref))

    async def close_case(self, ref: str, outcome: str) -> bool:
        cur = await self._execute(
            "UPDATE cases SET status = 'closed', outcome = ?, closed_at = ? "
            "WHERE ref = ? AND status = 'open'",
            (outcome, now_iso(), ref),
        )
        # Staff replies kept for the reporter to read again go with the open case, and so
        # does the way to reach the reporter: after closing, nobody can message them.
        await self._execute("UPDATE case_events SET for_reporter = NULL WHERE case_ref = ?", (ref,))
        await self._execute("UPDATE cases SET reply_handle = NULL WHERE ref = ?", (ref,))
        return cur.rowcount == 1

    async def reopen_case(self, ref: str) -> bool:
        cur = await self._execute(
            "UPDATE cases SET status = 'open', outcome = NULL, closed_at = NULL "
            "WHERE ref = ? AND status = 'closed'",
            (ref,),
        )
        return cur.rowcount == 1

    async def add_event(
        self,
        ref: str | None,
        actor: str,
        action: str,
        detail: str | None = None,
        *,
        sealed: SealedRecord | None = None,
        for_reporter: bytes | None = None,
    ) -> None:
        """A line of the case's timeline, also appended to the audit trail."""
        await self._execute(
            "INSERT INTO case_events (at, case_ref, actor, action, detail, sealed, for_reporter) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (now_iso(), ref, actor, action, detail, sealed and sealed.blob, for_reporter),
        )
        if sealed is not None and ref is not None:
            await self._add_wrapped_keys(ref, sealed)
        await self.audit(actor, action, ref, detail)

    async def take_pager(self, name: str, until: str) -> None:
        await self._execute(
            "INSERT INTO pager (id, name, since, until) VALUES (1, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET name = excluded.name, since = excluded.since, "
            "until = excluded.until",
            (name, now_iso(), until),
        )

    async def set_clock(self, name: str, at: str, expected: str | None = None) -> bool:
        """Set a named timer; with `expected`, only if it still holds that value (so a timer
        that fired is moved on exactly once)."""
        if expected is None:
            await self._execute(
                "INSERT INTO clock (name, at) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET at = excluded.at",
                (name, at),
            )
            return True
        cur = await self._execute(
            "UPDATE clock SET at = ? WHERE name = ? AND at = ?", (at, name, expected)
        )
        return cur.rowcount == 1

    async def forget_updates_before(self, cutoff_iso: str) -> None:
        await self._execute("DELETE FROM processed_updates WHERE processed_at < ?", (cutoff_iso,))


async def _recorded_checks(db: aiosqlite.Connection) -> SecretChecks:
    rows = await db.execute_fetchall(_SECRET_CHECKS_SQL)
    return {(int(r[0]), str(r[1])): str(r[2]) for r in rows}


def recorded_secret_checks(path: Path) -> SecretChecks:
    """The secret check values a database file (live, or a backup) holds; none for a file
    from before they were kept. Reads only, and leaves no -wal or -shm file behind (a
    read-only connection could not remove them); never creates the file."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
    except sqlite3.Error:
        raise StorageError(f"cannot open {path.name}") from None
    try:
        conn.execute("PRAGMA query_only = ON")
        rows = conn.execute(_SECRET_CHECKS_SQL).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}  # schema 4 or older
        raise _storage_error(exc) from None
    except sqlite3.Error as exc:
        raise _storage_error(exc) from None
    finally:
        conn.close()
    return {(int(r[0]), str(r[1])): str(r[2]) for r in rows}


def _marks(ids: Sequence[int] | Sequence[str]) -> str:
    if not ids:
        raise StorageError("an empty id list")
    return ", ".join("?" for _ in ids)


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script, whole: a trigger's body has semicolons inside."""
    statements, current = [], ""
    for line in script.splitlines():
        current += line.split("--", 1)[0] + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return [s for s in statements if s.rstrip(";").strip()]


async def _run_in_writer_thread(
    db: aiosqlite.Connection, fn: Callable[..., None], *args: Any
) -> None:
    """Run `fn(sqlite3_connection, *args)` in aiosqlite's own thread for `db`, in its queue.

    aiosqlite has no public call for several statements in one trip; `_execute` and `_conn`
    are what its own methods use. The test suite runs every transaction through here, so a
    change in aiosqlite shows at once.
    """
    await db._execute(fn, db._conn, *args)  # type: ignore[no-untyped-call]


def _execute_all(conn: sqlite3.Connection, statements: list[Statement]) -> None:
    for sql, params in statements:
        conn.execute(sql, params)


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
