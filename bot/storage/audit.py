"""The audit trail: append-only and hash-chained, so no entry can be edited, removed or moved.

Each entry says who did what to which case, and when; never content. Its MAC is
HMAC-SHA256 under the bot's audit key over the previous entry's MAC and this entry, computed by
the crypto facade (`BotCrypto.chain_audit_entry`). Someone who edits the database file cannot
recompute the chain without that key; SQLite triggers refuse UPDATE and DELETE on the table.

What the chain cannot show on its own is the newest entries cut off the end: `verify` reports
the head (count and MAC prefix) so an operator can compare it with one noted earlier.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiosqlite

# (previous mac, entry bytes) -> mac; provided by the crypto facade.
ChainFn = Callable[[bytes, bytes], bytes]

GENESIS = bytes(32)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str
    actor: str
    action: str
    case_ref: str | None
    detail: str | None


@dataclass(frozen=True)
class AuditReport:
    entries: int
    ok: bool
    first_bad_seq: int | None = None
    problem: str | None = None
    head: str = ""  # the last good MAC, hex prefix: note it to detect a cut-off tail

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "head": self.head,
        }


def entry_bytes(entry: AuditEntry) -> bytes:
    """The canonical bytes an entry's MAC covers (every field, in a fixed order)."""
    fields = [entry.seq, entry.at, entry.actor, entry.action, entry.case_ref, entry.detail]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()


async def append(
    db: aiosqlite.Connection,
    chain: ChainFn,
    at: str,
    actor: str,
    action: str,
    case_ref: str | None = None,
    detail: str | None = None,
) -> int:
    """Append one entry. Call inside a write transaction, so appends are serialised."""
    async with db.execute("SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1") as cur:
        last = await cur.fetchone()
    seq, previous = (int(last[0]) + 1, bytes(last[1])) if last else (1, GENESIS)
    entry = AuditEntry(seq, at, actor, action, case_ref, detail)
    mac = chain(previous, entry_bytes(entry))
    await db.execute(
        "INSERT INTO audit_log (seq, at, actor, action, case_ref, detail, mac) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (seq, at, actor, action, case_ref, detail, mac),
    )
    return seq


def verify_rows(rows: Iterable[sqlite3.Row | tuple[Any, ...]], chain: ChainFn) -> AuditReport:
    """Walk the chain from the first entry; stop at the first entry that does not fit."""
    previous, count, expected_seq = GENESIS, 0, 1
    for row in rows:
        seq, at, actor, action, case_ref, detail, mac = tuple(row)
        entry = AuditEntry(int(seq), at, actor, action, case_ref, detail)
        if entry.seq != expected_seq:
            problem = (
                f"entry {expected_seq} is missing" if entry.seq > expected_seq else "out of order"
            )
            return AuditReport(count, False, expected_seq, problem, previous.hex()[:16])
        if chain(previous, entry_bytes(entry)) != bytes(mac):
            return AuditReport(
                count,
                False,
                entry.seq,
                "entry altered, or an entry before it removed or moved",
                previous.hex()[:16],
            )
        previous, count, expected_seq = bytes(mac), count + 1, expected_seq + 1
    return AuditReport(count, True, head=previous.hex()[:16])


async def verify(db: aiosqlite.Connection, chain: ChainFn) -> AuditReport:
    async with db.execute(
        "SELECT seq, at, actor, action, case_ref, detail, mac FROM audit_log ORDER BY seq"
    ) as cur:
        rows = await cur.fetchall()
    return verify_rows(rows, chain)


async def entries(db: aiosqlite.Connection, case_ref: str | None = None) -> list[AuditEntry]:
    where, params = ("WHERE case_ref = ?", (case_ref,)) if case_ref else ("", ())
    async with db.execute(
        f"SELECT seq, at, actor, action, case_ref, detail FROM audit_log {where} ORDER BY seq",
        params,
    ) as cur:
        rows = await cur.fetchall()
    return [AuditEntry(*tuple(r)) for r in rows]
