"""The retention purge: each rule erases exactly what it should, crypto-shredding first, and
nothing of it is left in the database file, its WAL or any backup."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.config import RetentionSettings, Settings
from bot.crypto import BotCrypto
from bot.errors import StorageError
from bot.reports.reference import new_reference
from bot.storage.backup import backup
from bot.storage.retention import RetentionWorker, backup_files, purge
from bot.storage.sqlite import DB_NAME, SqliteStore, iso

NOW = datetime.now(UTC)


def ago(**delta: float) -> str:
    return iso(NOW - timedelta(**delta))


def marker(name: str) -> str:
    """An unsealed value (the reporter's pseudonym) to look for in raw file bytes."""
    return f"PSEUDO-{name}-7f3a"


async def add_case(
    store: SqliteStore,
    crypto: BotCrypto,
    ref: str,
    name: str,
    *,
    created: str,
    submitted: bool = True,
    escalated: bool = False,
    closed: str | None = None,
) -> None:
    """A case with a sealed report (carrying a canary), optionally escalated and closed, its
    timestamps moved into the past with plain SQL."""
    async with store.transaction() as tx:
        await tx.ensure_case(ref, marker(name), "young_person")
        sealed = crypto.seal_report(ref, f"my coach CANARY-{name}-xyz said...".encode())
        await tx.add_record(ref, "report", sealed)
        if submitted:
            await tx.mark_submitted(ref)
        if escalated:
            await tx.add_escalation(ref, "high", ["rule:test"])
        if closed is not None:
            await tx.close_case(ref, "advice_given")
    async with store.exclusive() as db:
        await db.execute(
            "UPDATE cases SET created_at = ?, submitted_at = CASE WHEN submitted_at IS NULL "
            "THEN NULL ELSE ? END, closed_at = ? WHERE ref = ?",
            (created, created, closed, ref),
        )
        await db.execute("UPDATE records SET created_at = ? WHERE case_ref = ?", (created, ref))
        await db.execute("UPDATE escalations SET created_at = ? WHERE case_ref = ?", (created, ref))


async def add_draft(store: SqliteStore, crypto: BotCrypto, name: str, updated: str) -> None:
    async with store.transaction() as tx:
        pseudonym = marker(name)
        await tx.save_draft(pseudonym, crypto.seal_draft(pseudonym, b"half a report"))
    async with store.exclusive() as db:
        await db.execute(
            "UPDATE conversations SET updated_at = ? WHERE pseudonym = ?", (updated, marker(name))
        )


def raw_bytes(path: Path) -> bytes:
    """A database file's bytes with its -wal and -journal, if any."""
    found = b""
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-journal")):
        if candidate.exists():
            found += candidate.read_bytes()
    return found


def rows(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


def db_path(data_dir: Path) -> Path:
    return data_dir / DB_NAME


# data_dir, crypto and store: tests/conftest.py and tests/unit/conftest.py


REFS = {
    name: new_reference()
    for name in (
        "open_old",
        "unfinished_old",
        "unfinished_recent",
        "unfinished_escalated",
        "closed_old",
        "closed_recent",
        "escalated_not_due",
        "escalated_due",
        "held",
    )
}
PURGED = {"unfinished_old": "unfinished", "closed_old": "closed", "escalated_due": "escalated"}
KEPT = sorted(set(REFS) - set(PURGED))
SETTINGS = RetentionSettings(legal_hold=[REFS["held"]])


async def seed(store: SqliteStore, crypto: BotCrypto) -> None:
    """One case for each side of each rule, drafts old and new, notices old and new."""
    await add_case(store, crypto, REFS["open_old"], "open_old", created=ago(days=400))
    await add_case(
        store, crypto, REFS["unfinished_old"], "unfinished_old", created=ago(hours=30),
        submitted=False,
    )  # fmt: skip
    await add_case(
        store, crypto, REFS["unfinished_recent"], "unfinished_recent", created=ago(hours=2),
        submitted=False,
    )  # fmt: skip
    await add_case(
        store, crypto, REFS["unfinished_escalated"], "unfinished_escalated",
        created=ago(days=3), submitted=False, escalated=True,
    )  # fmt: skip
    await add_case(
        store, crypto, REFS["closed_old"], "closed_old", created=ago(days=120),
        closed=ago(days=91),
    )  # fmt: skip
    await add_case(
        store, crypto, REFS["closed_recent"], "closed_recent", created=ago(days=120),
        closed=ago(days=89),
    )  # fmt: skip
    await add_case(
        store, crypto, REFS["escalated_not_due"], "escalated_not_due", created=ago(days=400),
        escalated=True, closed=ago(days=300),
    )  # fmt: skip
    await add_case(
        store, crypto, REFS["escalated_due"], "escalated_due", created=ago(days=9200),
        escalated=True, closed=ago(days=9126),
    )  # fmt: skip
    await add_case(store, crypto, REFS["held"], "held", created=ago(days=400), closed=ago(days=300))
    await add_draft(store, crypto, "draft_old", ago(hours=25))
    await add_draft(store, crypto, "draft_recent", ago(hours=1))
    ages = {}
    async with store.transaction() as tx:
        for name, sent, age in (
            ("old_sent", True, ago(days=91)),
            ("old_pending", False, ago(days=91)),
            ("new_sent", True, ago(days=1)),
        ):
            delivery = await tx.add_delivery("digest", "staff_chat", 3)
            if sent:
                await tx.deliveries_sent([delivery], 100)
            ages[delivery] = (name, age)
    async with store.exclusive() as db:
        for delivery, (_, age) in ages.items():
            await db.execute("UPDATE deliveries SET created_at = ? WHERE id = ?", (age, delivery))


async def case_refs(store: SqliteStore) -> set[str]:
    return {c.ref for c in await store.list_cases()}


async def count(store: SqliteStore, sql: str, params: tuple[object, ...] = ()) -> int:
    async with store.exclusive() as db:
        (row,) = await db.execute_fetchall(sql, params)
    return int(row[0])


# ---------------------------------------------------------------------------------- the rules
async def test_each_rule_purges_exactly_its_cases_and_nothing_else(
    store: SqliteStore, crypto: BotCrypto
) -> None:
    # Given one case on each side of each rule, a case on legal hold, drafts and notices
    await seed(store, crypto)
    purged_refs = [REFS[name] for name in PURGED]
    assert await count(store, "SELECT COUNT(*) FROM sealed_keys WHERE case_ref = ?", (
        purged_refs[0],
    )) > 0  # fmt: skip

    # When the purge runs
    result = await purge(store, SETTINGS, NOW)

    # Then exactly the due cases are gone: open, recent, held and not-yet-due ones stay
    assert await case_refs(store) == {REFS[name] for name in KEPT}
    assert (result.unfinished_cases, result.closed_cases, result.escalated_cases) == (1, 1, 1)
    assert result.drafts == 1 and result.deliveries == 1 and not result.dry_run
    # ... their data keys were shredded and everything of theirs went with them
    for table, column in (
        ("sealed_keys", "case_ref"),
        ("records", "case_ref"),
        ("escalations", "case_ref"),
        ("case_events", "case_ref"),
        ("deliveries", "case_ref"),
    ):
        found = await count(
            store,
            f"SELECT COUNT(*) FROM {table} WHERE {column} IN (?, ?, ?)",
            tuple(purged_refs),
        )
        assert found == 0, table
    for name in KEPT:
        assert await count(
            store, "SELECT COUNT(*) FROM sealed_keys WHERE case_ref = ?", (REFS[name],)
        ) > 0, name  # fmt: skip
    # ... the old draft went, the recent one stayed; the old sent notice went, not the rest
    assert await store.load_draft(marker("draft_old")) is None
    assert await store.load_draft(marker("draft_recent")) is not None
    assert await count(store, "SELECT COUNT(*) FROM deliveries WHERE case_ref IS NULL") == 2
    # ... each purge is in the audit trail with its rule, and the trail still verifies
    entries = [e for e in await store.audit_entries() if e.action == "case_purged"]
    assert {(e.case_ref, e.detail) for e in entries} == {
        (REFS[name], rule) for name, rule in PURGED.items()
    }
    assert any(e.action == "purge_run" for e in await store.audit_entries())
    assert (await store.verify_audit()).ok


async def test_a_second_purge_finds_nothing_and_leaves_no_audit_entry(
    store: SqliteStore, crypto: BotCrypto
) -> None:
    # Given a purge has run
    await seed(store, crypto)
    await purge(store, SETTINGS, NOW)
    before = len(await store.audit_entries())

    # When the periodic purge runs again at once
    again = await purge(store, SETTINGS, NOW)

    # Then nothing more is erased and the audit trail is not padded with empty runs
    assert again.cases == again.drafts == again.deliveries == 0
    assert len(await store.audit_entries()) == before


async def test_open_cases_are_never_purged_whatever_their_age(
    store: SqliteStore, crypto: BotCrypto
) -> None:
    # Given a submitted case left open for thirty years
    ref = new_reference()
    await add_case(store, crypto, ref, "ancient_open", created=ago(days=11000))

    # When the purge runs with the shortest periods there are
    short = RetentionSettings(unfinished_after_hours=1, closed_after_days=1, escalated_after_days=1)
    await purge(store, short, NOW)

    # Then it is still there: open cases are someone's work
    assert await case_refs(store) == {ref}


async def test_escalated_after_days_zero_never_erases_escalated_cases(
    store: SqliteStore, crypto: BotCrypto
) -> None:
    # Given an escalated case closed decades ago and an ordinary one closed as long ago
    escalated, ordinary = new_reference(), new_reference()
    await add_case(
        store, crypto, escalated, "esc", created=ago(days=20000), escalated=True,
        closed=ago(days=19000),
    )  # fmt: skip
    await add_case(store, crypto, ordinary, "ord", created=ago(days=20000), closed=ago(days=19000))

    # When the purge runs with escalated_after_days = 0
    await purge(store, RetentionSettings(escalated_after_days=0), NOW)

    # Then the escalated case is kept and the ordinary one erased
    assert await case_refs(store) == {escalated}


async def test_a_case_still_being_added_to_is_not_unfinished(
    store: SqliteStore, crypto: BotCrypto
) -> None:
    # Given an unsubmitted case created two days ago whose reporter's draft moved an hour ago
    ref = new_reference()
    await add_case(store, crypto, ref, "busy", created=ago(days=2), submitted=False)
    async with store.transaction() as tx:
        await tx.save_draft(marker("busy"), crypto.seal_draft(marker("busy"), b"more"))

    # When the purge runs
    result = await purge(store, SETTINGS, NOW)

    # Then the case is kept: it is not idle
    assert result.unfinished_cases == 0 and await case_refs(store) == {ref}


async def test_dry_run_counts_and_changes_nothing(
    store: SqliteStore, crypto: BotCrypto, data_dir: Path
) -> None:
    # Given the seeded data and a backup of it
    await seed(store, crypto)
    backups = data_dir / "backups"
    copy = await backup(store, backups)
    copy_hash = hashlib.sha256(copy.read_bytes()).hexdigest()
    audit_before = len(await store.audit_entries())
    keys_before = await count(store, "SELECT COUNT(*) FROM sealed_keys")

    # When a dry run is asked for
    result = await purge(store, SETTINGS, NOW, dry_run=True, backup_dir=backups)

    # Then it says what would go, and nothing went: not here, not in the backup
    assert result.dry_run and result.cases == 3 and result.drafts == 1
    assert await case_refs(store) == set(REFS.values())
    assert await count(store, "SELECT COUNT(*) FROM sealed_keys") == keys_before
    assert await store.load_draft(marker("draft_old")) is not None
    assert len(await store.audit_entries()) == audit_before
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == copy_hash


async def test_purge_without_the_audit_key_is_refused(data_dir: Path, crypto: BotCrypto) -> None:
    # Given a store opened without the bot's secrets
    async with SqliteStore(data_dir) as unsigned:
        # When a purge is attempted, Then it refuses: every purge must be in the audit trail
        with pytest.raises(StorageError, match="audit"):
            await purge(unsigned, SETTINGS, NOW)


# ---------------------------------------------------------------------------------- raw bytes
@pytest.mark.parametrize("vacuum", [True, False])
async def test_purged_content_is_gone_from_the_file_its_wal_and_every_backup(
    store: SqliteStore, crypto: BotCrypto, data_dir: Path, vacuum: bool
) -> None:
    # Given the seeded data, checkpointed into the file, and two backups holding it all
    await seed(store, crypto)
    backups = data_dir / "backups"
    first = await backup(store, backups, now=NOW - timedelta(days=1))
    second = await backup(store, backups, now=NOW)
    live = data_dir / DB_NAME
    for path in (live, first, second):
        found = raw_bytes(path)
        # the unsealed markers are there to be found (the canary is sealed anyway)
        assert marker("closed_old").encode() in found and marker("draft_old").encode() in found
        assert b"CANARY-closed_old" not in found

    # When the purge runs (with or without a VACUUM)
    result = await purge(store, SETTINGS, NOW, backup_dir=backups, vacuum=vacuum)

    # Then nothing of what was purged is in the bytes of the file, its WAL or any backup
    assert result.backups_cleaned == 2 and result.vacuumed is vacuum
    assert not Path(f"{live}-wal").exists() or Path(f"{live}-wal").stat().st_size == 0
    gone = [marker(name).encode() for name in (*PURGED, "draft_old")]
    gone += [f"CANARY-{name}".encode() for name in PURGED]
    for path in (live, first, second):
        found = raw_bytes(path)
        for needle in gone:
            assert needle not in found, (path.name, needle)
        # ... while what is kept is still there (the search can find things)
        assert marker("open_old").encode() in found and marker("held").encode() in found
    for path in (first, second):
        purged = [REFS[name] for name in PURGED]
        assert rows(path, "SELECT COUNT(*) FROM sealed_keys WHERE case_ref IN (?, ?, ?)", (
            *purged,
        ))[0][0] == 0  # fmt: skip
        assert not Path(f"{path}-wal").exists() and not Path(f"{path}-journal").exists()
    assert (await store.verify_audit()).ok


async def test_a_backup_taken_while_a_case_was_open_loses_it_once_purged_live(
    store: SqliteStore, crypto: BotCrypto, data_dir: Path
) -> None:
    # Given a backup taken while a case was still open
    ref = new_reference()
    await add_case(store, crypto, ref, "was_open", created=ago(days=200))
    backups = data_dir / "backups"
    copy = await backup(store, backups)
    audit_in_copy = rows(copy, "SELECT COUNT(*), MAX(seq) FROM audit_log")
    # ... and the case since closed, long enough ago to be due
    async with store.transaction() as tx:
        await tx.close_case(ref, "advice_given")
    async with store.exclusive() as db:
        await db.execute("UPDATE cases SET closed_at = ? WHERE ref = ?", (ago(days=100), ref))

    # When the purge runs
    result = await purge(store, SETTINGS, NOW, backup_dir=backups)

    # Then the backup's copy, open in it, is erased too (the live audit trail says it was
    # purged), and the backup's own audit trail is left exactly as it was
    assert result.closed_cases == 1 and result.backups_cleaned == 1
    assert rows(copy, "SELECT COUNT(*) FROM cases WHERE ref = ?", (ref,))[0][0] == 0
    assert rows(copy, "SELECT COUNT(*) FROM sealed_keys WHERE case_ref = ?", (ref,))[0][0] == 0
    assert marker("was_open").encode() not in raw_bytes(copy)
    assert rows(copy, "SELECT COUNT(*), MAX(seq) FROM audit_log") == audit_in_copy


async def test_backups_beyond_keep_backups_are_deleted_oldest_first(
    store: SqliteStore, crypto: BotCrypto, data_dir: Path
) -> None:
    # Given five backups, a day apart
    backups = data_dir / "backups"
    made = [await backup(store, backups, now=NOW - timedelta(days=d)) for d in range(5, 0, -1)]

    # When the purge runs keeping three
    result = await purge(store, RetentionSettings(keep_backups=3), NOW, backup_dir=backups)

    # Then the two oldest are gone and the newest three stay
    assert result.backups_deleted == 2
    assert backup_files(backups) == made[2:]


async def test_an_unreadable_file_in_the_backup_dir_is_counted_not_fatal(
    store: SqliteStore, crypto: BotCrypto, data_dir: Path
) -> None:
    # Given a file named like a backup that is not a database
    backups = data_dir / "backups"
    backups.mkdir(mode=0o700)
    (backups / "safeguard-20200101T000000Z.sqlite3").write_bytes(b"not a database at all")

    # When the purge runs
    result = await purge(store, SETTINGS, NOW, backup_dir=backups)

    # Then it is reported, and the purge itself did its work
    assert result.backups_unreadable == 1


# ---------------------------------------------------------------------------------- VACUUM
async def test_vacuum_runs_when_due_by_its_clock(store: SqliteStore, crypto: BotCrypto) -> None:
    # Given no VACUUM has ever run
    settings = RetentionSettings(vacuum_every_hours=24)

    # When the purge runs three times: now, an hour later, a day and more later
    first = await purge(store, settings, NOW)
    soon = await purge(store, settings, NOW + timedelta(hours=1))
    later = await purge(store, settings, NOW + timedelta(hours=25))

    # Then it vacuumed the first and last time only
    assert (first.vacuumed, soon.vacuumed, later.vacuumed) == (True, False, True)
    assert await store.clock("vacuum") == iso(NOW + timedelta(hours=25))


# ---------------------------------------------------------------------------------- the task
async def test_the_periodic_purge_runs_at_start_and_stops_cleanly(
    store: SqliteStore, crypto: BotCrypto, data_dir: Path
) -> None:
    # Given an old draft
    await add_draft(store, crypto, "draft_old", ago(hours=30))
    worker = RetentionWorker(store, RetentionSettings(), data_dir)

    # When the worker starts
    worker.start()
    try:
        for _ in range(100):
            if await store.load_draft(marker("draft_old")) is None:
                break
            await asyncio.sleep(0.05)
    finally:
        # Then (after stopping promptly) the draft is gone
        await asyncio.wait_for(worker.stop(), timeout=5)
    assert await store.load_draft(marker("draft_old")) is None


# ---------------------------------------------------------------------------------- settings
def test_retention_settings_defaults_and_ranges() -> None:
    # Given the defaults
    defaults = Settings().retention
    # Then they are the documented ones
    assert (defaults.unfinished_after_hours, defaults.closed_after_days) == (24, 90)
    assert defaults.escalated_after_days == 9125 and defaults.keep_backups == 14
    assert (defaults.purge_every_minutes, defaults.vacuum_every_hours) == (60, 24)
    assert defaults.backups_in(Path("d")) == Path("d/backups")

    # When codes on legal hold are typed loosely, Then they are normalised
    held = RetentionSettings(legal_hold=["k7fq 3qxm 9pla"])
    assert held.legal_hold == ["K7FQ-3QXM-9P1A"]

    # When values are out of range or inconsistent, Then they are refused
    for bad in (
        {"legal_hold": ["not a code"]},
        {"closed_after_days": 0},
        {"unfinished_after_hours": 0},
        {"keep_backups": 0},
        {"escalated_after_days": -1},
        {"closed_after_days": 400, "escalated_after_days": 300},
    ):
        with pytest.raises(ValidationError):
            RetentionSettings.model_validate(bad)
    assert RetentionSettings(escalated_after_days=0).escalated_after_days == 0


def test_a_timestamp_cutoff_compares_as_text() -> None:
    # Given the store's timestamp format, Then text order is time order (the SQL relies on it)
    early, late = NOW - timedelta(days=1), NOW
    assert iso(early) < iso(late)
    assert (
        sqlite3.connect(":memory:").execute("SELECT ? < ?", (iso(early), iso(late))).fetchone()[0]
    )
