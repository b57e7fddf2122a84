"""The crypto design, proved: bot.crypto (the one cryptographic facade), the key ceremonies
that keep the store in step with the key files (bot.key_ceremonies), and the hash-chained
audit trail (bot.storage.audit).

Each test states its property as Given / When / Then. Keys use a cheap Argon2id (FAST_KDF)
except where the default cost itself is the subject.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import re
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import key_ceremonies
from bot.crypto import (
    BOT_SECRETS_FILE,
    SUITE_NAME,
    BotCrypto,
    SealedRecord,
    StaffKey,
    add_staff_key,
    create_keys,
    forget_retired_secrets,
    keys_exist,
    record_key_id,
    staff_public_keys,
)
from bot.errors import (
    BotRunningError,
    ConfigError,
    CryptoError,
    KeyFileCorruptError,
    KeysExistError,
    KeysMissingError,
    NotReadableError,
    StorageError,
    TamperedError,
    WrongPassphraseError,
)
from bot.escalation.paging import followup_context, reply_context, trigger_context
from bot.reports.reading import CaseReader
from bot.storage.backup import backup, restore
from bot.storage.lock import data_dir_lock
from bot.storage.sqlite import (
    DB_NAME,
    SqliteStore,
    _migrations,
    _split_sql,
    recorded_secret_checks,
)
from tests.conftest import FAST_KDF, signed_store

REFERENCE = "K7FQ-3QXM-9PTA"
OTHER_REFERENCE = "0000-0000-0000"
CANARY = b"CANARY-3b1f0e9c-the-reporter-wrote-this"

# The team: each member has their own passphrase.
PRIYA, SAM, JO = "Priya Shah", "Sam", "Jo"
PASSPHRASES = {
    PRIYA: "correct horse battery staple 7f3a",
    SAM: "sam-passphrase-e41c-purple",
    JO: "jo-passphrase-90ab-teapot",
}
PASSPHRASE = PASSPHRASES[PRIYA]


# --- helpers ---------------------------------------------------------------------------------


def _keys(data_dir: Path) -> Path:
    return data_dir / "keys"


def _staff_dir(data_dir: Path) -> Path:
    return data_dir / "keys" / "staff"


def _private_file(data_dir: Path, name: str = PRIYA) -> Path:
    return _staff_dir(data_dir) / f"{'-'.join(name.split()).casefold()}.key.json"


def _public_file(data_dir: Path, name: str = PRIYA) -> Path:
    return _staff_dir(data_dir) / f"{'-'.join(name.split()).casefold()}.public.json"


def _secrets_file(data_dir: Path) -> Path:
    return _keys(data_dir) / BOT_SECRETS_FILE


def _read(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc))


def _make_first(data_dir: Path, name: str = PRIYA) -> None:
    create_keys(data_dir, name, PASSPHRASES[name], **FAST_KDF)


def _add(data_dir: Path, name: str) -> None:
    add_staff_key(data_dir, name, PASSPHRASES[name], **FAST_KDF)


def _unlock(data_dir: Path, name: str) -> StaffKey:
    return StaffKey.unlock(data_dir, name, PASSPHRASES[name])


def _all_key_files(data_dir: Path) -> list[Path]:
    return [p for p in _keys(data_dir).rglob("*") if p.is_file()]


async def _store_record(
    data_dir: Path, bot: BotCrypto, plaintext: bytes = CANARY, ref: str = REFERENCE
) -> SealedRecord:
    """Seal a record the way the bot does and keep it (record row + one wrapped key each)."""
    sealed = bot.seal_report(ref, plaintext)
    async with signed_store(data_dir) as store, store.transaction() as tx:
        await tx.ensure_case(ref, "reporter-pseudonym", None)
        await tx.add_record(ref, "report", sealed)
    return sealed


async def _open_stored(data_dir: Path, key: StaffKey, blob: bytes, ref: str = REFERENCE) -> bytes:
    """Open a stored record as staff do: with their own wrapped copy from the store."""
    async with SqliteStore(data_dir) as store:
        return await CaseReader(store, key).open(ref, blob)


async def _record_blobs(data_dir: Path) -> list[bytes]:
    async with SqliteStore(data_dir) as store:
        return [r.sealed for c in await store.list_cases() for r in await store.records_for(c.ref)]


async def _key_counts(data_dir: Path) -> dict[str, int]:
    async with SqliteStore(data_dir) as store:
        return await store.recipients_in_use()


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key set (one member) for the tests that only read it."""
    data_dir = tmp_path_factory.mktemp("shared")
    _make_first(data_dir)
    return data_dir


@pytest.fixture(scope="module")
def bot(shared_dir: Path) -> BotCrypto:
    return BotCrypto.load(shared_dir)


@pytest.fixture(scope="module")
def staff(shared_dir: Path) -> StaffKey:
    return _unlock(shared_dir, PRIYA)


@pytest.fixture
def one(tmp_path: Path) -> Path:
    """A fresh data dir with one member (Priya) that a test may damage."""
    data_dir = tmp_path / "data"
    _make_first(data_dir)
    return data_dir


@pytest.fixture
def team(one: Path) -> Path:
    """A fresh data dir with three members: Priya, Sam and Jo."""
    _add(one, SAM)
    _add(one, JO)
    return one


# ===============================================================================================
# Creating keys
# ===============================================================================================


def test_create_keys_writes_secrets_and_one_key_pair(tmp_path: Path) -> None:
    """Given an empty data dir
    When the first member's keys are created
    Then the bot's secrets and that member's public and private key files exist, and the
    returned fingerprint is the one in both files, four groups of four hex digits."""
    data_dir = tmp_path / "data"
    assert not keys_exist(data_dir)

    public = create_keys(data_dir, PRIYA, PASSPHRASE, **FAST_KDF)

    assert keys_exist(data_dir)
    assert sorted(p.name for p in _keys(data_dir).iterdir()) == [BOT_SECRETS_FILE, "staff"]
    assert sorted(p.name for p in _staff_dir(data_dir).iterdir()) == [
        "priya-shah.key.json",
        "priya-shah.public.json",
    ]
    public_doc = _read(_public_file(data_dir))
    assert public_doc["fingerprint"] == public.fingerprint
    assert _read(_private_file(data_dir))["fingerprint"] == public.fingerprint
    assert public_doc["name"] == PRIYA and public_doc["suite"] == SUITE_NAME
    assert len(base64.b64decode(public_doc["public_key"])) == 1184 + 32
    groups = public.fingerprint.split(" ")
    assert len(groups) == 4
    assert all(len(g) == 4 and all(c in "0123456789abcdef" for c in g) for g in groups)


def test_fingerprints_agree_between_bot_and_staff(team: Path) -> None:
    """Given three members
    When the bot loads the public keys and each member unlocks their own key
    Then each member's fingerprint is one of the bot's recipients, and all three differ."""
    bot = BotCrypto.load(team)

    unlocked = {name: _unlock(team, name).fingerprint for name in PASSPHRASES}

    assert {r.name: r.fingerprint for r in bot.recipients} == unlocked
    assert len(set(unlocked.values())) == 3


def test_default_kdf_parameters_are_strong_and_stored_in_the_key_file(tmp_path: Path) -> None:
    """Given no KDF arguments
    When keys are created
    Then the key file stores Argon2id with at least 64 MiB and 3 passes, 4 lanes and a
    16-byte salt, and the key unlocks with exactly those stored parameters."""
    create_keys(tmp_path, PRIYA, PASSPHRASE)

    kdf = _read(_private_file(tmp_path))["kdf"]
    assert kdf["name"] == "argon2id"
    assert kdf["memory_kib"] >= 65536
    assert kdf["iterations"] >= 3
    assert kdf["lanes"] == 4
    assert len(base64.b64decode(kdf["salt"])) == 16
    assert StaffKey.unlock(tmp_path, PRIYA, PASSPHRASE).fingerprint


def test_create_keys_twice_is_refused(one: Path) -> None:
    """Given existing keys
    When keys are created again
    Then KeysExistError is raised and no key file changed."""
    before = {p: p.read_bytes() for p in _all_key_files(one)}

    with pytest.raises(KeysExistError):
        create_keys(one, "Someone Else", "another passphrase", **FAST_KDF)

    assert {p: p.read_bytes() for p in _all_key_files(one)} == before


@pytest.mark.parametrize("survivor", ["secrets", "public", "private"])
def test_create_keys_refuses_if_any_key_file_exists(one: Path, survivor: str) -> None:
    """Given only one of the key files left
    When keys are created
    Then KeysExistError is raised."""
    keep = {
        "secrets": _secrets_file(one),
        "public": _public_file(one),
        "private": _private_file(one),
    }[survivor]
    for path in _all_key_files(one):
        if path != keep:
            path.unlink()

    assert keys_exist(one)
    with pytest.raises(KeysExistError):
        _make_first(one)


def test_empty_passphrase_is_refused_at_creation(tmp_path: Path) -> None:
    """Given an empty passphrase
    When keys are created
    Then ConfigError is raised and no key file is written."""
    with pytest.raises(ConfigError):
        create_keys(tmp_path, PRIYA, "", **FAST_KDF)

    assert not keys_exist(tmp_path)


@pytest.mark.parametrize("name", ["", "../escape", "a/b", "1st", " leading", "x" * 41, "é"])
def test_bad_staff_names_are_refused(one: Path, name: str) -> None:
    """Given a name that is not a plain label (it is also a file name)
    When a key is added under it
    Then ConfigError is raised and nothing is written outside the staff directory."""
    before = sorted(p.name for p in _staff_dir(one).iterdir())

    with pytest.raises(ConfigError):
        add_staff_key(one, name, "a passphrase", **FAST_KDF)

    assert sorted(p.name for p in _staff_dir(one).iterdir()) == before
    assert sorted(p.name for p in _keys(one).iterdir()) == [BOT_SECRETS_FILE, "staff"]


@pytest.mark.parametrize("name", [PRIYA, "priya shah", "PRIYA  SHAH"])
def test_adding_the_same_name_twice_is_refused(one: Path, name: str) -> None:
    """Given a member named Priya Shah
    When a key is added under the same name (any case or spacing)
    Then KeysExistError is raised and her key files are unchanged."""
    before = {p: p.read_bytes() for p in _all_key_files(one)}

    with pytest.raises(KeysExistError):
        add_staff_key(one, name, "another passphrase", **FAST_KDF)

    assert {p: p.read_bytes() for p in _all_key_files(one)} == before


def test_adding_staff_needs_existing_keys(tmp_path: Path) -> None:
    """Given a data dir without keys
    When a staff key is added
    Then KeysMissingError says to run `keys init`."""
    with pytest.raises(KeysMissingError, match="keys init"):
        add_staff_key(tmp_path, SAM, PASSPHRASES[SAM], **FAST_KDF)


@pytest.mark.parametrize(
    "kdf",
    [
        {"kdf_memory_kib": 16, "kdf_iterations": 1},
        {"kdf_memory_kib": 8 * 1024 * 1024, "kdf_iterations": 1},
        {"kdf_memory_kib": 8192, "kdf_iterations": 0},
        {"kdf_memory_kib": 8192, "kdf_iterations": 65},
    ],
)
def test_kdf_parameters_out_of_bounds_are_refused(tmp_path: Path, kdf: dict[str, int]) -> None:
    """Given Argon2id parameters below Argon2's minimum or above the bounds
    When keys are created
    Then ConfigError is raised before any work, and no key file is written."""
    with pytest.raises(ConfigError):
        create_keys(tmp_path, PRIYA, PASSPHRASE, **kdf)

    assert not keys_exist(tmp_path)


def test_key_files_are_private(team: Path) -> None:
    """Given three members' keys
    Then the keys and staff directories are 0700, every key file 0600, no temp file left."""
    assert stat.S_IMODE(_keys(team).stat().st_mode) == 0o700
    assert stat.S_IMODE(_staff_dir(team).stat().st_mode) == 0o700
    files = _all_key_files(team)
    assert len(files) == 1 + 2 * 3
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
        assert not path.name.startswith("."), path.name


def test_no_key_file_contains_a_passphrase(team: Path) -> None:
    """Given three members' keys
    Then no key file contains any passphrase, raw or base64-encoded."""
    for path in _all_key_files(team):
        content = path.read_bytes()
        for secret in PASSPHRASES.values():
            assert secret.encode() not in content, path.name
            assert base64.b64encode(secret.encode()) not in content, path.name
        assert b"horse battery" not in content, path.name


# ===============================================================================================
# Sealing and opening records
# ===============================================================================================


def test_record_round_trip(bot: BotCrypto, staff: StaffKey) -> None:
    """Given a record sealed by the bot
    When the member opens it with their wrapped copy of its data key
    Then they get the original content."""
    sealed = bot.seal_report(REFERENCE, CANARY)

    assert staff.open_report(REFERENCE, sealed.blob, sealed.wrapped_keys[staff.fingerprint]) == (
        CANARY
    )


def test_empty_record_round_trip(bot: BotCrypto, staff: StaffKey) -> None:
    """Given an empty record
    When sealed and opened
    Then the result is empty."""
    sealed = bot.seal_report(REFERENCE, b"")

    assert staff.open_report(REFERENCE, sealed.blob, sealed.wrapped_keys[staff.fingerprint]) == b""


def test_sealed_record_does_not_contain_the_plaintext(bot: BotCrypto) -> None:
    """Given a record holding a unique canary
    When sealed
    Then neither the blob nor any wrapped key holds the canary or a large piece of it."""
    sealed = bot.seal_report(REFERENCE, CANARY)

    for blob in (sealed.blob, *sealed.wrapped_keys.values()):
        assert CANARY not in blob
        assert CANARY[:12] not in blob
        assert base64.b64encode(CANARY) not in blob


def test_sealed_record_format(bot: BotCrypto) -> None:
    """Given a sealed record
    Then its first byte is format version 2, followed by the 16-byte key id that
    record_key_id reads back, and it is exactly 1 + 16 + 12 + len(plaintext) + 16 bytes."""
    sealed = bot.seal_report(REFERENCE, CANARY)

    assert sealed.blob[0] == 2
    assert record_key_id(sealed.blob) == sealed.key_id == sealed.blob[1:17]
    assert len(sealed.blob) == 1 + 16 + 12 + len(CANARY) + 16


def test_sealing_twice_gives_different_blobs_and_data_keys(bot: BotCrypto, staff: StaffKey) -> None:
    """Given the same record and case
    When sealed twice
    Then the blobs, key ids and wrapped keys differ and both open."""
    first = bot.seal_report(REFERENCE, CANARY)
    second = bot.seal_report(REFERENCE, CANARY)

    assert first.blob != second.blob
    assert first.key_id != second.key_id
    assert first.wrapped_keys[staff.fingerprint] != second.wrapped_keys[staff.fingerprint]
    for sealed in (first, second):
        opened = staff.open_report(REFERENCE, sealed.blob, sealed.wrapped_keys[staff.fingerprint])
        assert opened == CANARY


def test_record_moved_to_another_case_does_not_open(bot: BotCrypto, staff: StaffKey) -> None:
    """Given a record sealed for one case
    When opened under another case's reference
    Then TamperedError is raised."""
    sealed = bot.seal_report(REFERENCE, CANARY)

    with pytest.raises(TamperedError):
        staff.open_report(OTHER_REFERENCE, sealed.blob, sealed.wrapped_keys[staff.fingerprint])


def test_record_with_another_records_data_key_does_not_open(
    bot: BotCrypto, staff: StaffKey
) -> None:
    """Given two records of the same case
    When one is opened with the wrapped data key of the other
    Then TamperedError is raised (the key id is bound into the wrapping)."""
    first = bot.seal_report(REFERENCE, CANARY)
    second = bot.seal_report(REFERENCE, CANARY)

    with pytest.raises(TamperedError):
        staff.open_report(REFERENCE, first.blob, second.wrapped_keys[staff.fingerprint])


@pytest.mark.parametrize("position", [1, 16, 17, 28, 29, 40, -17, -1])
def test_one_flipped_byte_in_a_record_is_detected(
    bot: BotCrypto, staff: StaffKey, position: int
) -> None:
    """Given a sealed record
    When one byte (key id, nonce, ciphertext or tag) is flipped
    Then opening raises TamperedError and never shows the plaintext."""
    sealed = bot.seal_report(REFERENCE, CANARY)
    blob = bytearray(sealed.blob)
    blob[position] ^= 0x01

    with pytest.raises(TamperedError) as excinfo:
        staff.open_report(REFERENCE, bytes(blob), sealed.wrapped_keys[staff.fingerprint])
    assert CANARY.decode() not in str(excinfo.value)


@pytest.mark.parametrize("version", [0, 1, 3, 255])
def test_unknown_record_format_is_detected(bot: BotCrypto, staff: StaffKey, version: int) -> None:
    """Given a sealed record whose format byte was changed
    When opened
    Then TamperedError is raised."""
    sealed = bot.seal_report(REFERENCE, CANARY)

    with pytest.raises(TamperedError):
        staff.open_report(
            REFERENCE, bytes([version]) + sealed.blob[1:], sealed.wrapped_keys[staff.fingerprint]
        )


@pytest.mark.parametrize("length", [0, 1, 17, 44, -1])
def test_truncated_record_is_detected(bot: BotCrypto, staff: StaffKey, length: int) -> None:
    """Given a sealed record cut short
    When opened
    Then TamperedError is raised."""
    sealed = bot.seal_report(REFERENCE, CANARY)

    with pytest.raises(TamperedError):
        staff.open_report(REFERENCE, sealed.blob[:length], sealed.wrapped_keys[staff.fingerprint])


@pytest.mark.parametrize("damage", ["flip first", "flip last", "truncate", "empty"])
def test_damaged_wrapped_key_is_detected(bot: BotCrypto, staff: StaffKey, damage: str) -> None:
    """Given a record whose wrapped data key was altered
    When opened
    Then TamperedError is raised."""
    sealed = bot.seal_report(REFERENCE, CANARY)
    wrapped = bytearray(sealed.wrapped_keys[staff.fingerprint])
    if damage == "flip first":
        wrapped[0] ^= 0x01
    elif damage == "flip last":
        wrapped[-1] ^= 0x01
    elif damage == "truncate":
        del wrapped[-20:]
    else:
        wrapped = bytearray()

    with pytest.raises(TamperedError):
        staff.open_report(REFERENCE, sealed.blob, bytes(wrapped))


# ===============================================================================================
# Per-person keys: one record, sealed once, a wrapped data key per member
# ===============================================================================================


def test_record_for_three_members_opens_with_each_ones_own_wrapped_key(team: Path) -> None:
    """Given a record sealed while three members hold keys
    When each member opens it
    Then each opens it with their own wrapped key; with another member's wrapped key it is
    TamperedError, and with none it is NotReadableError."""
    bot = BotCrypto.load(team)
    sealed = bot.seal_report(REFERENCE, CANARY)
    keys = {name: _unlock(team, name) for name in PASSPHRASES}
    assert set(sealed.wrapped_keys) == {k.fingerprint for k in keys.values()}

    for name, key in keys.items():
        assert key.open_report(REFERENCE, sealed.blob, sealed.wrapped_keys[key.fingerprint]) == (
            CANARY
        )
        for other_name, other in keys.items():
            if other_name != name:
                with pytest.raises(TamperedError):
                    key.open_report(REFERENCE, sealed.blob, sealed.wrapped_keys[other.fingerprint])
        with pytest.raises(NotReadableError):
            key.open_report(REFERENCE, sealed.blob, None)


def test_record_ciphertext_is_sealed_once_whatever_the_team_size(tmp_path: Path) -> None:
    """Given the same record sealed for a team of one and a team of three
    Then the content blob has the same size, each member's wrapped key has the same fixed
    size, and one blob (not a copy per member) is what every member opens."""
    data_dir = tmp_path / "data"
    _make_first(data_dir)
    alone = BotCrypto.load(data_dir).seal_report(REFERENCE, CANARY)
    _add(data_dir, SAM)
    _add(data_dir, JO)
    bot = BotCrypto.load(data_dir)

    shared = bot.seal_report(REFERENCE, CANARY)

    assert len(alone.blob) == len(shared.blob) == 1 + 16 + 12 + len(CANARY) + 16
    assert len(alone.wrapped_keys) == 1 and len(shared.wrapped_keys) == 3
    sizes = {len(w) for w in (*alone.wrapped_keys.values(), *shared.wrapped_keys.values())}
    assert len(sizes) == 1  # HPKE encapsulated key || AES-GCM(32-byte data key)
    big = bot.seal_report(REFERENCE, CANARY * 100)
    assert {len(w) for w in big.wrapped_keys.values()} == sizes
    for name in PASSPHRASES:
        key = _unlock(data_dir, name)
        assert key.open_report(REFERENCE, shared.blob, shared.wrapped_keys[key.fingerprint]) == (
            CANARY
        )


async def test_store_keeps_one_record_row_and_one_wrapped_key_per_member(team: Path) -> None:
    """Given a record sealed for three members
    When it is stored
    Then the store holds the blob once and one wrapped key per member, under its key id."""
    sealed = await _store_record(team, BotCrypto.load(team))

    assert await _record_blobs(team) == [sealed.blob]
    with sqlite3.connect(team / DB_NAME) as db:
        rows = db.execute("SELECT key_id, case_ref, recipient FROM sealed_keys").fetchall()
    assert sorted(rows) == sorted((sealed.key_id, REFERENCE, fp) for fp in sealed.wrapped_keys)


async def test_full_round_trip_through_the_store_for_two_members(one: Path) -> None:
    """Given two members and a record sealed by the bot and added to the store
    When each member opens it through CaseReader
    Then both read the content, and the database file does not contain it."""
    _add(one, SAM)
    sealed = await _store_record(one, BotCrypto.load(one))

    for name in (PRIYA, SAM):
        assert await _open_stored(one, _unlock(one, name), sealed.blob) == CANARY
    assert CANARY not in (one / DB_NAME).read_bytes()


# ===============================================================================================
# Key ceremonies against the store
# ===============================================================================================


async def test_removed_member_cannot_open_new_records_and_nothing_is_reencrypted(
    team: Path,
) -> None:
    """Given three members, a running bot and a stored record sealed to all three
    When Jo is removed
    Then the running bot seals the next record only to Priya and Sam (no restart); Jo's
    wrapped keys are gone, so Jo opens neither record; Priya and Sam still open the old one;
    and the stored record bytes are exactly as before."""
    bot = BotCrypto.load(team)
    jo = _unlock(team, JO)
    old = await _store_record(team, bot)
    blobs_before = await _record_blobs(team)

    removed = await key_ceremonies.remove_staff(team, JO)
    new = await _store_record(team, bot, b"after Jo left")

    assert removed.fingerprint == jo.fingerprint
    assert jo.fingerprint not in new.wrapped_keys
    assert {r.name for r in bot.recipients} == {PRIYA, SAM}
    assert jo.fingerprint not in await _key_counts(team)
    for blob in (old.blob, new.blob):
        with pytest.raises(NotReadableError):
            await _open_stored(team, jo, blob)
    for name in (PRIYA, SAM):
        assert await _open_stored(team, _unlock(team, name), old.blob) == CANARY
        assert await _open_stored(team, _unlock(team, name), new.blob) == b"after Jo left"
    assert (await _record_blobs(team))[: len(blobs_before)] == blobs_before
    assert not _public_file(team, JO).exists() and not _private_file(team, JO).exists()


async def test_newcomer_added_by_a_member_opens_old_records(one: Path) -> None:
    """Given a record stored while only Priya held a key
    When Sam is added with `by` Priya's unlocked key
    Then Sam opens the old record and records sealed from then on."""
    bot = BotCrypto.load(one)
    old = await _store_record(one, bot)

    public, shared = await key_ceremonies.add_staff(
        one, SAM, PASSPHRASES[SAM], by=_unlock(one, PRIYA), **FAST_KDF
    )
    new = await _store_record(one, bot, b"new")

    assert shared == 1
    assert public.fingerprint in new.wrapped_keys  # the running bot picked Sam up
    sam = _unlock(one, SAM)
    assert await _open_stored(one, sam, old.blob) == CANARY
    assert await _open_stored(one, sam, new.blob) == b"new"


async def test_newcomer_added_without_by_opens_only_new_records(one: Path) -> None:
    """Given a record stored while only Priya held a key
    When Sam is added without `by`
    Then Sam opens new records but the old one raises NotReadableError, until Priya shares."""
    bot = BotCrypto.load(one)
    old = await _store_record(one, bot)

    _, shared = await key_ceremonies.add_staff(one, SAM, PASSPHRASES[SAM], None, **FAST_KDF)
    new = await _store_record(one, bot, b"new")

    assert shared == 0
    sam = _unlock(one, SAM)
    assert await _open_stored(one, sam, new.blob) == b"new"
    with pytest.raises(NotReadableError):
        await _open_stored(one, sam, old.blob)

    assert await key_ceremonies.share_records(one, _unlock(one, PRIYA), SAM) == 2
    assert await _open_stored(one, sam, old.blob) == CANARY


async def test_remove_staff_refuses_to_orphan_records_unless_forced(one: Path) -> None:
    """Given a record only Priya can open, and Sam added later without a share
    When Priya is removed
    Then it is refused (ConfigError naming the count) and nothing changes; with force=True
    she is removed and the record can be opened by nobody."""
    old = await _store_record(one, BotCrypto.load(one))
    await key_ceremonies.add_staff(one, SAM, PASSPHRASES[SAM], None, **FAST_KDF)
    files_before = {p: p.read_bytes() for p in _all_key_files(one)}

    with pytest.raises(ConfigError, match="1 records can be opened only with Priya Shah"):
        await key_ceremonies.remove_staff(one, PRIYA)
    assert {p: p.read_bytes() for p in _all_key_files(one)} == files_before
    assert sum((await _key_counts(one)).values()) == 1

    await key_ceremonies.remove_staff(one, PRIYA, force=True)

    assert await _key_counts(one) == {}
    with pytest.raises(NotReadableError):
        await _open_stored(one, _unlock(one, SAM), old.blob)


@pytest.mark.parametrize("spelling", ["Priya-Shah", "priya  shah", "PRIYA_SHAH"])
async def test_remove_staff_with_a_loose_spelling_cannot_skip_the_orphan_check(
    one: Path, spelling: str
) -> None:
    """Given a record only Priya can open, and Sam added later
    When Priya is removed under a spelling that differs from her key's name (one that
    could still find her key file)
    Then it is refused and her key and wrapped keys stay: the orphan check is never skipped."""
    await _store_record(one, BotCrypto.load(one))
    await key_ceremonies.add_staff(one, SAM, PASSPHRASES[SAM], None, **FAST_KDF)
    counts = await _key_counts(one)

    with pytest.raises((KeysMissingError, ConfigError)):
        await key_ceremonies.remove_staff(one, spelling)

    assert _public_file(one).exists() and _private_file(one).exists()
    assert await _key_counts(one) == counts


async def test_removing_a_member_also_clears_copies_left_by_an_earlier_failed_removal(
    team: Path,
) -> None:
    """Given a copy of a data key sealed to a key that no longer exists (a removal that failed
    after deleting the files), when another member is removed, then that copy goes too."""
    sealed = await _store_record(team, BotCrypto.load(team))
    with sqlite3.connect(team / "safeguard.sqlite3") as db:
        db.execute(
            "INSERT INTO sealed_keys (key_id, case_ref, recipient, wrapped) VALUES (?, ?, ?, ?)",
            (sealed.key_id, REFERENCE, "dead beef dead beef", b"x" * 40),
        )
    await key_ceremonies.remove_staff(team, JO)
    counts = await _key_counts(team)
    assert "dead beef dead beef" not in counts and len(counts) == 2


async def test_remove_staff_refuses_to_remove_the_last_key(one: Path) -> None:
    """Given one member and no records
    When that member is removed, even with force=True
    Then ConfigError is raised and the key files stay."""
    for force in (False, True):
        with pytest.raises(ConfigError, match="last staff key"):
            await key_ceremonies.remove_staff(one, PRIYA, force=force)
    assert _public_file(one).exists() and _private_file(one).exists()


async def test_remove_unknown_member_is_refused(one: Path) -> None:
    """Given no member called Nobody
    When Nobody is removed
    Then KeysMissingError is raised."""
    with pytest.raises(KeysMissingError, match="Nobody"):
        await key_ceremonies.remove_staff(one, "Nobody")


async def test_rotated_staff_key_opens_old_records_and_the_old_key_opens_nothing(
    team: Path,
) -> None:
    """Given stored records sealed to Sam's key
    When Sam's key is rotated (a new passphrase)
    Then the new key has a new fingerprint and opens the old records; the old private key
    opens nothing in the store (its wrapped keys are deleted, and it cannot open the new
    ones); the old passphrase no longer unlocks; record bytes are unchanged; the running bot
    seals to the new key."""
    bot = BotCrypto.load(team)
    first = await _store_record(team, bot)
    second = await _store_record(team, bot, b"second", ref=OTHER_REFERENCE)
    blobs_before = await _record_blobs(team)
    old = _unlock(team, SAM)

    public, moved = await key_ceremonies.rotate_staff_key(
        team, old, "sam-new-passphrase", **FAST_KDF
    )

    assert moved == 2
    assert public.fingerprint != old.fingerprint
    counts = await _key_counts(team)
    assert old.fingerprint not in counts and counts[public.fingerprint] == 2
    new = StaffKey.unlock(team, SAM, "sam-new-passphrase")
    assert new.fingerprint == public.fingerprint
    assert await _open_stored(team, new, first.blob) == CANARY
    assert await _open_stored(team, new, second.blob, OTHER_REFERENCE) == b"second"
    with pytest.raises(NotReadableError):
        await _open_stored(team, old, first.blob)
    async with SqliteStore(team) as store:
        rewrapped = await store.wrapped_keys(REFERENCE, public.fingerprint)
    with pytest.raises(TamperedError):
        old.open_report(REFERENCE, first.blob, rewrapped[first.key_id])
    with pytest.raises(WrongPassphraseError):
        StaffKey.unlock(team, SAM, PASSPHRASES[SAM])
    assert await _record_blobs(team) == blobs_before
    later = bot.seal_report(REFERENCE, b"later")
    assert public.fingerprint in later.wrapped_keys and old.fingerprint not in later.wrapped_keys


async def test_rotating_a_key_with_a_damaged_copy_changes_nothing(team: Path) -> None:
    """Given Sam holds copies of two data keys, one of them damaged in the store
    When Sam's key is rotated
    Then the rotation is refused before anything changes: Sam's old passphrase still unlocks
    the old key, which still opens the good record, and no retired key file is left over."""
    bot = BotCrypto.load(team)
    good = await _store_record(team, bot)
    await _store_record(team, bot, b"second", ref=OTHER_REFERENCE)
    old = _unlock(team, SAM)
    with sqlite3.connect(team / "safeguard.sqlite3") as db:
        db.execute(
            "UPDATE sealed_keys SET wrapped = zeroblob(length(wrapped)) "
            "WHERE recipient = ? AND case_ref = ?",
            (old.fingerprint, OTHER_REFERENCE),
        )

    with pytest.raises(CryptoError, match="nothing was changed"):
        await key_ceremonies.rotate_staff_key(team, old, "sam-new-passphrase", **FAST_KDF)

    again = _unlock(team, SAM)
    assert again.fingerprint == old.fingerprint
    assert await _open_stored(team, again, good.blob) == CANARY
    assert not list(_staff_dir(team).glob("*.retired"))


async def test_a_rotation_leaves_no_retired_key_behind(team: Path) -> None:
    """Given a rotation that succeeds, then the old private key kept during it is deleted."""
    await _store_record(team, BotCrypto.load(team))
    await key_ceremonies.rotate_staff_key(team, _unlock(team, SAM), "sam-new", **FAST_KDF)
    assert not list(_staff_dir(team).glob("*.retired"))


def test_running_bot_keeps_the_last_good_recipients_if_a_staff_file_is_damaged(
    team: Path,
) -> None:
    """Given a running bot sealing to three members
    When a staff public key file is damaged on disk
    Then the bot keeps sealing to the last good list (never to nobody, never in the clear),
    and a fresh load refuses with KeyFileCorruptError naming the file."""
    bot = BotCrypto.load(team)
    _public_file(team, JO).write_text("{ damaged")

    sealed = bot.seal_report(REFERENCE, CANARY)

    assert len(sealed.wrapped_keys) == 3
    assert CANARY not in sealed.blob
    with pytest.raises(KeyFileCorruptError, match=re.escape("jo.public.json")):
        BotCrypto.load(team)


# ===============================================================================================
# Rotating the bot's secrets
# ===============================================================================================

USER_ID = 5_551_234_567
CHAT_ID = -1_001_234_567_890


async def _store_short_lived(data_dir: Path, bot: BotCrypto) -> str:
    """A draft, a reply handle, an alert trigger, a follow-up in transit and a staff reply
    kept for the reporter: everything sealed under the bot's own secrets."""
    pseudonym = bot.pseudonym_for(USER_ID)
    async with signed_store(data_dir) as store, store.transaction() as tx:
        await tx.save_draft(pseudonym, bot.seal_draft(pseudonym, b"draft canary"))
        await tx.ensure_case(REFERENCE, pseudonym, None)
        await tx.set_reply_handle(REFERENCE, bot.seal_reply_handle(REFERENCE, CHAT_ID))
        await tx.add_escalation(
            REFERENCE,
            "immediate",
            ["danger"],
            trigger_sealed=bot.seal_transit(trigger_context(REFERENCE), b"trigger canary"),
        )
        await tx.add_delivery(
            "followup",
            "staff-chat",
            1,
            case_ref=REFERENCE,
            body_sealed=bot.seal_transit(followup_context(REFERENCE), b"followup canary"),
        )
        await tx.add_event(
            REFERENCE,
            "Sam",
            "replied",
            sealed=bot.seal_report(REFERENCE, b"reply canary"),
            for_reporter=bot.seal_transit(reply_context(REFERENCE), b"reply canary"),
        )
    return pseudonym


async def test_rotating_bot_secrets_reseals_everything_short_lived(one: Path) -> None:
    """Given a draft, a reply handle and transit text sealed under generation 1
    When the bot's secrets are rotated (bot stopped)
    Then generation 2 seals; every item was sealed again under it and opens with a freshly
    loaded bot; the reporter's pseudonym changed but earlier_pseudonyms_for finds the old one;
    and generation 1's encryption keys are gone from bot_secrets.json."""
    bot = BotCrypto.load(one)
    pseudonym = await _store_short_lived(one, bot)
    gen1 = _read(_secrets_file(one))["generations"][0]

    generation, resealed = await key_ceremonies.rotate_bot_secrets(one)

    assert (generation, resealed) == (2, 5)
    after = BotCrypto.load(one)
    assert after.generation == 2
    async with SqliteStore(one) as store:
        draft = await store.load_draft(pseudonym)
        handle = await store.reply_handle(REFERENCE)
        (escalation,) = await store.escalations_for(REFERENCE)
        events = await store.case_events(REFERENCE)
    with sqlite3.connect(one / DB_NAME) as db:
        (followup,) = db.execute("SELECT body_sealed FROM deliveries").fetchone()
    trigger, reply = escalation.trigger_sealed, events[0].for_reporter
    assert draft is not None and handle is not None and trigger is not None and reply is not None
    for blob in (draft, handle, trigger, followup, reply):
        assert int.from_bytes(blob[1:3], "big") == 2
    assert after.open_draft(pseudonym, draft) == b"draft canary"
    assert after.open_reply_handle(REFERENCE, handle) == CHAT_ID
    assert after.open_transit(trigger_context(REFERENCE), trigger) == b"trigger canary"
    assert after.open_transit(followup_context(REFERENCE), followup) == b"followup canary"
    assert after.open_transit(reply_context(REFERENCE), reply) == b"reply canary"

    assert after.pseudonym_for(USER_ID) != pseudonym
    assert after.earlier_pseudonyms_for(USER_ID) == [pseudonym]
    assert after.rate_limit_pseudonym_for(USER_ID) != bot.rate_limit_pseudonym_for(USER_ID)

    doc = _read(_secrets_file(one))
    text = _secrets_file(one).read_text()
    old, current = doc["generations"]
    assert old["id"] == 1 and "retired_at" in old and current["id"] == 2
    for field in ("draft_key", "reply_handle_key", "transit_key"):
        assert field not in old
        assert gen1[field] not in text
    # An item still sealed under the forgotten keys cannot be opened any more.
    with pytest.raises(TamperedError, match="forgotten"):
        after.open_draft(pseudonym, bot.seal_draft(pseudonym, b"stale"))


async def test_rotating_bot_secrets_keeps_the_audit_chain(one: Path) -> None:
    """Given audit entries signed before a rotation
    When the bot's secrets are rotated
    Then the chain verifies from its first entry with the rotated secrets."""
    await _store_short_lived(one, BotCrypto.load(one))

    await key_ceremonies.rotate_bot_secrets(one)

    async with signed_store(one) as store:
        report = await store.verify_audit()
        actions = [e.action for e in await store.audit_entries()]
    assert report.ok, report
    assert actions[-1] == "bot_secrets_rotated"


async def test_rotating_bot_secrets_refuses_while_the_bot_runs(one: Path) -> None:
    """Given the data dir's lock held (as the running bot holds it)
    When the bot's secrets are rotated
    Then BotRunningError is raised and bot_secrets.json is unchanged."""
    before = _secrets_file(one).read_bytes()

    with data_dir_lock(one, "running the bot"), pytest.raises(BotRunningError, match="stop"):
        await key_ceremonies.rotate_bot_secrets(one)

    assert _secrets_file(one).read_bytes() == before


# ===============================================================================================
# Unlocking a staff key
# ===============================================================================================


def test_wrong_passphrase_is_refused_without_echoing_it(team: Path) -> None:
    """Given three members
    When Priya's key is unlocked with another passphrase (including Sam's)
    Then WrongPassphraseError is raised and neither passphrase is in its message or repr."""
    for wrong in ("not-the-passphrase-91c2", PASSPHRASES[SAM]):
        with pytest.raises(WrongPassphraseError) as excinfo:
            StaffKey.unlock(team, PRIYA, wrong)
        message = str(excinfo.value) + repr(excinfo.value)
        assert wrong not in message
        assert PASSPHRASE not in message


def test_empty_passphrase_does_not_unlock(shared_dir: Path) -> None:
    """Given a key
    When unlocking with an empty passphrase
    Then WrongPassphraseError is raised."""
    with pytest.raises(WrongPassphraseError):
        StaffKey.unlock(shared_dir, PRIYA, "")


def test_unlocking_an_unknown_name_is_refused(shared_dir: Path) -> None:
    """Given no member called Nobody
    When Nobody's key is unlocked
    Then KeysMissingError is raised."""
    with pytest.raises(KeysMissingError, match="Nobody"):
        StaffKey.unlock(shared_dir, "Nobody", PASSPHRASE)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("memory_kib", 16384),
        ("iterations", 2),
        ("lanes", 2),
        ("salt", base64.b64encode(b"\x00" * 16).decode()),
        ("name", "argon2i"),
        ("memory_kib", 8192.0),
        ("memory_kib", True),
        ("memory_kib", 1 << 40),
        ("iterations", 10_000),
        ("iterations", 0),
        ("lanes", 1000),
        ("salt", "not base64!"),
        ("salt", base64.b64encode(b"\x00" * 8).decode()),
    ],
)
def test_edited_kdf_parameters_fail_cleanly(one: Path, field: str, value: Any) -> None:
    """Given a private key file whose KDF parameters were edited (including bounds an
    attacker would use to make unlocking hang or exhaust memory)
    When unlocking with the right passphrase
    Then WrongPassphraseError or KeyFileCorruptError is raised at once, never a key."""
    path = _private_file(one)
    doc = _read(path)
    doc["kdf"][field] = value
    _write(path, doc)

    with pytest.raises((WrongPassphraseError, KeyFileCorruptError)) as excinfo:
        StaffKey.unlock(one, PRIYA, PASSPHRASE)
    assert PASSPHRASE not in str(excinfo.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "Mallory"), ("fingerprint", "0000 0000 0000 0000"), ("suite", "other")],
)
def test_edited_key_file_header_fails(one: Path, field: str, value: str) -> None:
    """Given a private key file whose name, fingerprint or suite was edited
    When unlocking with the right passphrase
    Then a CryptoError is raised: the header is authenticated with the key."""
    path = _private_file(one)
    doc = _read(path)
    doc[field] = value
    _write(path, doc)

    with pytest.raises((WrongPassphraseError, KeyFileCorruptError)):
        StaffKey.unlock(one, PRIYA, PASSPHRASE)


def test_public_key_of_another_member_is_detected_at_unlock(team: Path) -> None:
    """Given Priya's public key file replaced by Sam's
    When Priya unlocks her private key
    Then KeyFileCorruptError says the files do not belong together."""
    _public_file(team, PRIYA).write_bytes(_public_file(team, SAM).read_bytes())

    with pytest.raises(KeyFileCorruptError, match="does not belong"):
        _unlock(team, PRIYA)


def test_private_key_file_swapped_for_anothers_does_not_unlock(team: Path) -> None:
    """Given Sam's private key file copied over Priya's
    When Priya unlocks with her passphrase
    Then WrongPassphraseError is raised (Sam's key needs Sam's passphrase)."""
    _private_file(team, PRIYA).write_bytes(_private_file(team, SAM).read_bytes())

    with pytest.raises(WrongPassphraseError):
        _unlock(team, PRIYA)


def test_staff_key_unlocks_with_only_the_private_file(one: Path) -> None:
    """Given only Priya's private key file (copied to her own machine)
    When she unlocks it
    Then it opens records the bot sealed."""
    sealed = BotCrypto.load(one).seal_report(REFERENCE, CANARY)
    _public_file(one).unlink()
    _secrets_file(one).unlink()

    key = _unlock(one, PRIYA)

    assert key.open_report(REFERENCE, sealed.blob, sealed.wrapped_keys[key.fingerprint]) == CANARY


def test_bot_never_needs_a_private_key(team: Path) -> None:
    """Given a server from which every private key file has been removed
    When the bot loads
    Then it seals records that the members (elsewhere) open."""
    private = {p: p.read_bytes() for p in _staff_dir(team).glob("*.key.json")}
    for path in private:
        path.unlink()

    sealed = BotCrypto.load(team).seal_report(REFERENCE, CANARY)

    for path, content in private.items():
        path.write_bytes(content)
    for name in PASSPHRASES:
        key = _unlock(team, name)
        assert key.open_report(REFERENCE, sealed.blob, sealed.wrapped_keys[key.fingerprint]) == (
            CANARY
        )


@pytest.mark.parametrize("damage", ["not json", "truncated file", "short ciphertext", "no nonce"])
def test_corrupt_private_key_file_is_reported(one: Path, damage: str) -> None:
    """Given a damaged private key file
    When unlocked
    Then KeyFileCorruptError names the file."""
    path = _private_file(one)
    raw = path.read_bytes()
    doc = json.loads(raw)
    if damage == "not json":
        path.write_text("nope")
    elif damage == "truncated file":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "short ciphertext":
        doc["ciphertext"] = base64.b64encode(base64.b64decode(doc["ciphertext"])[:-10]).decode()
        _write(path, doc)
    else:
        del doc["nonce"]
        _write(path, doc)

    with pytest.raises(KeyFileCorruptError, match=re.escape("priya-shah.key.json")):
        StaffKey.unlock(one, PRIYA, PASSPHRASE)


def test_flipped_bit_in_the_wrapped_private_key_fails(one: Path) -> None:
    """Given a private key file whose encrypted key has one flipped bit
    When unlocked with the right passphrase
    Then WrongPassphraseError is raised (the AES-GCM tag does not verify)."""
    path = _private_file(one)
    doc = _read(path)
    wrapped = bytearray(base64.b64decode(doc["ciphertext"]))
    wrapped[3] ^= 0x80
    doc["ciphertext"] = base64.b64encode(bytes(wrapped)).decode()
    _write(path, doc)

    with pytest.raises(WrongPassphraseError):
        StaffKey.unlock(one, PRIYA, PASSPHRASE)


def test_passphrase_is_unicode_normalised(tmp_path: Path) -> None:
    """Given a passphrase with an accented letter, typed composed at creation
    When unlocked with the same letters typed decomposed
    Then it unlocks."""
    create_keys(tmp_path, PRIYA, "caf\u00e9 au lait", **FAST_KDF)

    assert StaffKey.unlock(tmp_path, PRIYA, "cafe\u0301 au lait").name == PRIYA


# ===============================================================================================
# Missing and corrupt files: never a fallback
# ===============================================================================================


def test_missing_keys_are_reported(tmp_path: Path) -> None:
    """Given a data dir without keys
    When the bot loads or a member unlocks
    Then KeysMissingError is raised; for the bot it names bot_secrets.json."""
    with pytest.raises(KeysMissingError, match=re.escape(BOT_SECRETS_FILE)):
        BotCrypto.load(tmp_path)
    with pytest.raises(KeysMissingError):
        StaffKey.unlock(tmp_path, PRIYA, PASSPHRASE)


def test_bot_without_any_staff_public_key_refuses_to_load(one: Path) -> None:
    """Given the bot's secrets but no staff public key
    When the bot loads
    Then KeysMissingError is raised: a report nobody could read is never sealed."""
    _public_file(one).unlink()

    with pytest.raises(KeysMissingError, match="no staff public key"):
        BotCrypto.load(one)


def test_old_single_key_layout_is_refused(tmp_path: Path) -> None:
    """Given a data dir with the single shared staff key of an earlier version
    When the bot loads, or keys are created there
    Then the load is refused with a message saying per-person keys replace it, and creating
    keys is refused (nothing is overwritten)."""
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    (keys_dir / "staff_public.json").write_text('{"kind": "safeguard-staff-public"}')

    with pytest.raises(KeyFileCorruptError) as excinfo:
        BotCrypto.load(tmp_path)
    assert "single shared staff key" in str(excinfo.value)
    assert "keys init" in str(excinfo.value)
    with pytest.raises(KeysExistError):
        _make_first(tmp_path)


def _damage_file(path: Path, damage: str, edit: Any = None) -> None:
    raw = path.read_bytes()
    if damage == "not json":
        path.write_text("{ this is not json")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "list":
        path.write_text("[]")
    elif damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "binary":
        path.write_bytes(b"\xff\xfe\x00garbage")
    elif damage == "huge":
        path.write_bytes(b" " * (300 * 1024) + raw)
    else:
        doc = json.loads(raw)
        edit(doc)
        _write(path, doc)


@pytest.mark.parametrize(
    ("damage", "edit"),
    [
        ("not json", None),
        ("empty", None),
        ("list", None),
        ("truncated", None),
        ("binary", None),
        ("huge", None),
        ("short key", lambda d: d.update(public_key=d["public_key"][:-8])),
        ("bad fingerprint", lambda d: d.update(fingerprint="ffff ffff ffff ffff")),
        ("wrong suite", lambda d: d.update(suite="X25519/HKDF-SHA256/AES-128-GCM")),
        ("wrong version", lambda d: d.update(version=99)),
        ("wrong kind", lambda d: d.update(kind="safeguard-staff-private")),
        ("bad name", lambda d: d.update(name="../x")),
        ("extra field", lambda d: d.update(private_key="oops")),
    ],
)
def test_corrupt_public_key_file_is_reported(one: Path, damage: str, edit: Any) -> None:
    """Given a damaged staff public key file
    When the bot loads
    Then KeyFileCorruptError names the file."""
    _damage_file(_public_file(one), damage, edit)

    with pytest.raises(KeyFileCorruptError, match=re.escape("priya-shah.public.json")):
        BotCrypto.load(one)


def _gen(doc: dict[str, Any], index: int = -1) -> dict[str, Any]:
    gen: dict[str, Any] = doc["generations"][index]
    return gen


@pytest.mark.parametrize(
    ("damage", "edit"),
    [
        ("not json", None),
        ("truncated", None),
        ("binary", None),
        ("short secret", lambda d: _gen(d).update(draft_key=base64.b64encode(b"k" * 16).decode())),
        ("missing field", lambda d: _gen(d).pop("reporter_pepper")),
        ("missing key", lambda d: _gen(d).pop("transit_key")),
        ("no generations", lambda d: d.update(generations=[])),
        ("newest retired", lambda d: _gen(d).update(retired_at="2026-01-01T00:00:00+00:00")),
        ("wrong kind", lambda d: d.update(kind="safeguard-staff-public")),
        ("no audit key", lambda d: d.pop("audit_key")),
    ],
)
def test_corrupt_secrets_file_is_reported(one: Path, damage: str, edit: Any) -> None:
    """Given a damaged bot_secrets.json
    When the bot loads
    Then KeyFileCorruptError names the file (never a fallback to something weaker)."""
    _damage_file(_secrets_file(one), damage, edit)

    with pytest.raises(KeyFileCorruptError, match=re.escape(BOT_SECRETS_FILE)):
        BotCrypto.load(one)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("reporter_pepper", "rate_limit_pepper"),
        ("reporter_pepper", "draft_key"),
        ("draft_key", "reply_handle_key"),
        ("reply_handle_key", "transit_key"),
        ("audit_key", "rate_limit_pepper"),
    ],
)
def test_secrets_with_two_equal_values_are_refused(one: Path, first: str, second: str) -> None:
    """Given bot_secrets.json where two values are equal (e.g. the two peppers, which would
    let a rate-limit counter be joined to a case)
    When the bot loads
    Then KeyFileCorruptError is raised."""
    path = _secrets_file(one)
    doc = _read(path)
    gen = _gen(doc)
    value = doc["audit_key"] if first == "audit_key" else gen[first]
    gen[second] = value
    _write(path, doc)

    with pytest.raises(KeyFileCorruptError, match="not distinct"):
        BotCrypto.load(one)


async def test_secrets_equal_across_generations_are_refused(one: Path) -> None:
    """Given two generations of secrets where the new pepper repeats the old one
    When the bot loads
    Then KeyFileCorruptError is raised."""
    await key_ceremonies.rotate_bot_secrets(one)
    path = _secrets_file(one)
    doc = _read(path)
    _gen(doc, -1)["reporter_pepper"] = _gen(doc, 0)["reporter_pepper"]
    _write(path, doc)

    with pytest.raises(KeyFileCorruptError, match="not distinct"):
        BotCrypto.load(one)


# ===============================================================================================
# bot_secrets.json must be the one the database was used with
# ===============================================================================================


async def _open_as_the_bot(data_dir: Path) -> None:
    """Open the store as the bot and every command holding its secrets do."""
    async with SqliteStore(data_dir, secrets=BotCrypto.load(data_dir)):
        pass


def _recorded(data_dir: Path) -> dict[tuple[int, str], str]:
    return recorded_secret_checks(data_dir / DB_NAME)


def _secret_values(doc: dict[str, Any]) -> list[str]:
    """Every secret in a bot_secrets.json document, base64 as in the file."""
    values = [doc["audit_key"]]
    for gen in doc["generations"]:
        values += [v for k, v in gen.items() if k.endswith(("_pepper", "_key"))]
    return values


def _swap(data_dir: Path, generation: int, field: str) -> None:
    """Replace one secret by another well-formed value (distinct from all the others)."""
    path = _secrets_file(data_dir)
    doc = _read(path)
    new = base64.b64encode(os.urandom(32)).decode()
    if field == "audit_key":
        doc["audit_key"] = new
    else:
        next(g for g in doc["generations"] if g["id"] == generation)[field] = new
    _write(path, doc)


def _age_retired_generations(data_dir: Path, days: int) -> None:
    path = _secrets_file(data_dir)
    doc = _read(path)
    for gen in doc["generations"][:-1]:
        gen["retired_at"] = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    _write(path, doc)


async def test_first_use_records_a_check_value_of_each_secret_never_the_secret(
    tmp_path: Path,
) -> None:
    """Given a new data dir
    When `keys init` creates the keys (and opens the database to audit it)
    Then the database holds one check value per secret (the audit key as generation 0,
    generation 1's five), equal to what the bot computes, and no secret in any encoding."""
    data_dir = tmp_path / "data"

    await key_ceremonies.init_keys(data_dir, PRIYA, PASSPHRASE, **FAST_KDF)

    recorded = _recorded(data_dir)
    assert recorded == BotCrypto.load(data_dir).secret_checks
    assert sorted(recorded) == [
        (0, "audit_key"),
        (1, "draft_key"),
        (1, "rate_limit_pepper"),
        (1, "reply_handle_key"),
        (1, "reporter_pepper"),
        (1, "transit_key"),
    ]
    assert len(set(recorded.values())) == len(recorded)
    database = (data_dir / DB_NAME).read_bytes()
    for value in _secret_values(_read(_secrets_file(data_dir))):
        raw = base64.b64decode(value)
        for encoded in (value.encode(), raw, raw.hex().encode(), raw[:16].hex().encode()):
            assert encoded not in database
        assert raw.hex()[:32] not in recorded.values()


async def test_the_same_secrets_are_accepted_and_nothing_is_written_again(one: Path) -> None:
    """Given a database already used with these secrets
    When the bot opens it again (a restart)
    Then it opens, and the recorded check values are exactly as they were."""
    await _open_as_the_bot(one)
    with sqlite3.connect(one / DB_NAME) as db:
        before = db.execute("SELECT * FROM bot_secret_checks ORDER BY 1, 2").fetchall()

    await _open_as_the_bot(one)

    with sqlite3.connect(one / DB_NAME) as db:
        assert db.execute("SELECT * FROM bot_secret_checks ORDER BY 1, 2").fetchall() == before


@pytest.mark.parametrize(
    ("generation", "field", "named"),
    [
        (2, "draft_key", "the draft key of generation 2"),
        (2, "reporter_pepper", "the reporter pepper of generation 2"),
        (2, "rate_limit_pepper", "the rate-limit pepper of generation 2"),
        (2, "reply_handle_key", "the reply-handle key of generation 2"),
        (2, "transit_key", "the transit key of generation 2"),
        (1, "reporter_pepper", "the reporter pepper of generation 1"),
        (0, "audit_key", "the audit key"),
    ],
)
async def test_one_swapped_secret_is_refused_naming_it(
    one: Path, generation: int, field: str, named: str
) -> None:
    """Given a database used with two generations of secrets (one rotation)
    When one secret in bot_secrets.json is replaced by another well-formed value
    Then opening with the secrets is refused: one line naming the file, which secret of which
    generation differs, and what to do; no value of either file is in it, and the database
    still holds the check values of the right secrets."""
    await _open_as_the_bot(one)
    await key_ceremonies.rotate_bot_secrets(one)
    recorded = _recorded(one)
    before = _read(_secrets_file(one))
    _swap(one, generation, field)

    with pytest.raises(KeyFileCorruptError) as excinfo:
        await _open_as_the_bot(one)

    message = str(excinfo.value)
    assert message == (
        f"{_secrets_file(one)} does not match the database: {named} differs; "
        "restore the bot_secrets.json that belongs to this data dir"
    )
    for value in _secret_values(before) + _secret_values(_read(_secrets_file(one))):
        assert value not in message and base64.b64decode(value).hex() not in message
    assert _recorded(one) == recorded


async def test_two_secrets_swapped_with_each_other_are_both_named(one: Path) -> None:
    """Given a database used with these secrets
    When the draft key and the transit key trade places in bot_secrets.json
    Then both are named."""
    await _open_as_the_bot(one)
    path = _secrets_file(one)
    doc = _read(path)
    gen = _gen(doc)
    gen["draft_key"], gen["transit_key"] = gen["transit_key"], gen["draft_key"]
    _write(path, doc)

    with pytest.raises(KeyFileCorruptError, match="the draft key of generation 1 and the transit"):
        await _open_as_the_bot(one)


async def test_the_secrets_of_another_data_dir_are_refused(one: Path, tmp_path: Path) -> None:
    """Given a database used with its own secrets
    When the bot_secrets.json of another installation is put in its place
    Then opening is refused, saying none of its secrets are this database's."""
    await _open_as_the_bot(one)
    other = tmp_path / "other"
    _make_first(other)
    _secrets_file(one).write_bytes(_secrets_file(other).read_bytes())

    with pytest.raises(KeyFileCorruptError, match=r"none of its secrets .* another data dir"):
        await _open_as_the_bot(one)


async def test_rotating_then_starting_is_accepted_and_records_the_new_generation(
    one: Path,
) -> None:
    """Given a database used with generation 1
    When the bot's secrets are rotated (`keys rotate`) and the bot starts
    Then it opens; the database now also holds generation 2's check values, and
    generation 1's are kept."""
    await _open_as_the_bot(one)
    first = _recorded(one)

    await key_ceremonies.rotate_bot_secrets(one)
    await _open_as_the_bot(one)

    recorded = _recorded(one)
    assert first.items() <= recorded.items()
    checks = BotCrypto.load(one).secret_checks
    assert {k: v for k, v in checks.items() if k[0] == 2} == {
        k: v for k, v in recorded.items() if k[0] == 2
    }
    assert len([k for k in recorded if k[0] == 2]) == 5


async def test_rotating_a_swapped_secrets_file_is_refused_and_changes_nothing(
    one: Path,
) -> None:
    """Given a database used with these secrets, and then one key in bot_secrets.json edited
    When the bot's secrets are rotated
    Then the rotation is refused before bot_secrets.json or the database is changed."""
    await _open_as_the_bot(one)
    _swap(one, 1, "draft_key")
    before = _secrets_file(one).read_bytes()
    recorded = _recorded(one)

    with pytest.raises(KeyFileCorruptError, match="the draft key of generation 1 differs"):
        await key_ceremonies.rotate_bot_secrets(one)

    assert _secrets_file(one).read_bytes() == before
    assert _recorded(one) == recorded


async def test_a_secrets_file_from_before_a_rotation_is_refused(one: Path) -> None:
    """Given a database used with generation 2 after a rotation
    When the bot_secrets.json of before the rotation is put back
    Then opening is refused: the database was last used with a generation it lacks."""
    await _open_as_the_bot(one)
    old = _secrets_file(one).read_bytes()
    await key_ceremonies.rotate_bot_secrets(one)
    _secrets_file(one).write_bytes(old)

    with pytest.raises(KeyFileCorruptError, match=r"up to 1, but .* generation 2"):
        await _open_as_the_bot(one)


async def test_a_database_from_before_the_checks_records_them_and_is_not_refused(
    one: Path,
) -> None:
    """Given a database of schema 4, made before the secret check values were kept
    When the bot opens it with its secrets
    Then it is migrated and opens (not refused), and the check values are recorded."""
    with sqlite3.connect(one / DB_NAME) as db:
        for version, script in _migrations():
            if version <= 4:
                for statement in _split_sql(script):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {version}")
    assert _recorded(one) == {}

    await _open_as_the_bot(one)

    assert _recorded(one) == BotCrypto.load(one).secret_checks


async def test_a_backup_from_before_a_recent_rotation_restores_with_the_current_secrets(
    one: Path,
) -> None:
    """Given a backup made with generation 1, then a rotation (generation 1's peppers are
    kept for 30 days)
    When the backup is restored with the current bot_secrets.json
    Then it is accepted, the bot opens the restored database, and it now knows generation 2."""
    await _open_as_the_bot(one)
    async with SqliteStore(one, secrets=BotCrypto.load(one)) as store:
        path = await backup(store, one / "backups")
    await key_ceremonies.rotate_bot_secrets(one)

    await restore(one, path)
    await _open_as_the_bot(one)

    assert {g for g, _ in _recorded(one)} == {0, 1, 2}


async def test_a_backup_needing_a_forgotten_generation_is_refused_and_nothing_restored(
    one: Path,
) -> None:
    """Given a backup made with generation 1, a rotation, and generation 1 forgotten after
    30 days
    When that backup is restored
    Then the restore is refused naming generation 1, and the live database is untouched."""
    await _open_as_the_bot(one)
    async with SqliteStore(one, secrets=BotCrypto.load(one)) as store:
        path = await backup(store, one / "backups")
    await key_ceremonies.rotate_bot_secrets(one)
    _age_retired_generations(one, days=31)
    forget_retired_secrets(one)
    assert [g["id"] for g in _read(_secrets_file(one))["generations"]] == [2]
    live = (one / DB_NAME).read_bytes()

    with pytest.raises(KeyFileCorruptError) as excinfo:
        await restore(one, path)

    message = str(excinfo.value)
    assert f"does not match the backup {path.name}" in message
    assert "generation 1, which it no longer holds" in message
    assert "nothing was restored" in message
    assert (one / DB_NAME).read_bytes() == live
    assert not list(one.glob("*.before-restore-*"))


# ===============================================================================================
# Pseudonyms
# ===============================================================================================


def test_pseudonym_is_stable_and_opaque(bot: BotCrypto, shared_dir: Path) -> None:
    """Given a Telegram user id
    When its pseudonym is computed twice, also by a freshly loaded bot
    Then it is the same 64-hex-char value, not the id."""
    first = bot.pseudonym_for(USER_ID)

    assert first == bot.pseudonym_for(USER_ID)
    assert first == BotCrypto.load(shared_dir).pseudonym_for(USER_ID)
    assert len(first) == 64 and all(c in "0123456789abcdef" for c in first)
    assert str(USER_ID) not in first


def test_reporter_and_rate_limit_pseudonyms_differ(bot: BotCrypto) -> None:
    """Given one user
    Then the reporter pseudonym and the rate-limit pseudonym differ (two peppers), and both
    are stable."""
    reporter = bot.pseudonym_for(USER_ID)
    rate_limit = bot.rate_limit_pseudonym_for(USER_ID)

    assert reporter != rate_limit
    assert rate_limit == bot.rate_limit_pseudonym_for(USER_ID)
    assert len(rate_limit) == 64


def test_pseudonyms_differ_between_users(bot: BotCrypto) -> None:
    """Given two user ids
    Then their pseudonyms differ."""
    assert bot.pseudonym_for(123456789) != bot.pseudonym_for(123456780)
    assert bot.rate_limit_pseudonym_for(123456789) != bot.rate_limit_pseudonym_for(123456780)


def test_pseudonyms_differ_between_installations(bot: BotCrypto, one: Path) -> None:
    """Given two data dirs (different peppers)
    Then the same user gets different pseudonyms."""
    assert bot.pseudonym_for(USER_ID) != BotCrypto.load(one).pseudonym_for(USER_ID)


def test_no_earlier_pseudonyms_before_a_rotation(bot: BotCrypto) -> None:
    """Given secrets never rotated
    Then a user has no earlier pseudonyms."""
    assert bot.earlier_pseudonyms_for(USER_ID) == []


# ===============================================================================================
# Drafts, transit text and reply handles (the bot's own short-lived secrets)
# ===============================================================================================


def test_draft_round_trip(bot: BotCrypto) -> None:
    """Given a draft sealed for a pseudonym
    When opened for the same pseudonym
    Then the content comes back; the sealed form hides it and names the generation."""
    pseudonym = bot.pseudonym_for(42)

    sealed = bot.seal_draft(pseudonym, CANARY)

    assert CANARY not in sealed
    assert sealed[0] == 2 and int.from_bytes(sealed[1:3], "big") == bot.generation == 1
    assert bot.open_draft(pseudonym, sealed) == CANARY
    assert bot.seal_draft(pseudonym, CANARY) != sealed


def test_draft_is_bound_to_its_pseudonym(bot: BotCrypto) -> None:
    """Given a draft sealed for one reporter
    When opened under another reporter's pseudonym
    Then TamperedError is raised."""
    sealed = bot.seal_draft(bot.pseudonym_for(42), CANARY)

    with pytest.raises(TamperedError):
        bot.open_draft(bot.pseudonym_for(43), sealed)


@pytest.mark.parametrize("mutation", ["flip", "truncate", "empty", "version", "generation"])
def test_damaged_draft_is_detected(bot: BotCrypto, mutation: str) -> None:
    """Given a sealed draft that was altered
    When opened
    Then TamperedError is raised."""
    pseudonym = bot.pseudonym_for(42)
    sealed = bytearray(bot.seal_draft(pseudonym, CANARY))
    if mutation == "flip":
        sealed[20] ^= 0x01
    elif mutation == "truncate":
        del sealed[10:]
    elif mutation == "empty":
        sealed = bytearray()
    elif mutation == "version":
        sealed[0] = 1
    else:
        sealed[2] = 9

    with pytest.raises(TamperedError):
        bot.open_draft(pseudonym, bytes(sealed))


def test_drafts_survive_a_restart(shared_dir: Path, bot: BotCrypto) -> None:
    """Given a draft sealed before a restart
    When a freshly loaded bot opens it
    Then the content comes back."""
    pseudonym = bot.pseudonym_for(7)
    sealed = bot.seal_draft(pseudonym, b"half-finished answers")

    assert BotCrypto.load(shared_dir).open_draft(pseudonym, sealed) == b"half-finished answers"


def test_transit_text_is_bound_to_its_context(bot: BotCrypto) -> None:
    """Given an alert's trigger sealed for one case
    When opened for the same case, another case, or as a follow-up of the same case
    Then only the first opens."""
    sealed = bot.seal_transit(trigger_context(REFERENCE), CANARY)

    assert CANARY not in sealed
    assert bot.open_transit(trigger_context(REFERENCE), sealed) == CANARY
    for context in (trigger_context(OTHER_REFERENCE), followup_context(REFERENCE)):
        with pytest.raises(TamperedError):
            bot.open_transit(context, sealed)


@pytest.mark.parametrize("chat_id", [123456789, CHAT_ID, 0, 2**63 - 1, -(2**63)])
def test_reply_handle_round_trip(bot: BotCrypto, chat_id: int) -> None:
    """Given a chat id sealed for a case
    When opened for the same case
    Then the chat id comes back."""
    assert bot.open_reply_handle(REFERENCE, bot.seal_reply_handle(REFERENCE, chat_id)) == chat_id


def test_reply_handle_hides_the_chat_id(bot: BotCrypto) -> None:
    """Given a sealed reply handle
    Then neither the decimal nor the binary chat id appears in it, and sealing twice differs."""
    chat_id = 987654321
    sealed = bot.seal_reply_handle(REFERENCE, chat_id)

    assert str(chat_id).encode() not in sealed
    assert chat_id.to_bytes(8, "big") not in sealed
    assert sealed != bot.seal_reply_handle(REFERENCE, chat_id)


def test_reply_handle_is_bound_to_its_case(bot: BotCrypto) -> None:
    """Given a reply handle sealed for one case
    When opened for another case
    Then TamperedError is raised."""
    sealed = bot.seal_reply_handle(REFERENCE, 123456789)

    with pytest.raises(TamperedError):
        bot.open_reply_handle(OTHER_REFERENCE, sealed)


def test_the_bots_keys_are_separate_per_purpose(bot: BotCrypto) -> None:
    """Given a reply handle, a draft and transit text sealed under the same label
    When each is presented as another kind
    Then none opens (different keys and purposes)."""
    handle = bot.seal_reply_handle(REFERENCE, 123456789)
    draft = bot.seal_draft(REFERENCE, b"12345678")
    transit = bot.seal_transit(REFERENCE, b"12345678")

    for attempt in (
        lambda: bot.open_draft(REFERENCE, handle),
        lambda: bot.open_transit(REFERENCE, handle),
        lambda: bot.open_reply_handle(REFERENCE, draft),
        lambda: bot.open_transit(REFERENCE, draft),
        lambda: bot.open_draft(REFERENCE, transit),
        lambda: bot.open_reply_handle(REFERENCE, transit),
    ):
        with pytest.raises(TamperedError):
            attempt()


def test_chat_id_out_of_range_is_refused(bot: BotCrypto) -> None:
    """Given a chat id that does not fit in 64 bits
    When sealed
    Then CryptoError is raised."""
    with pytest.raises(CryptoError):
        bot.seal_reply_handle(REFERENCE, 2**64)


# ===============================================================================================
# No secret in a repr, no pickling
# ===============================================================================================


def test_reprs_show_only_fingerprints(shared_dir: Path, bot: BotCrypto, staff: StaffKey) -> None:
    """Given a loaded bot and an unlocked key
    Then their reprs show the fingerprint and none of the secret values or the passphrase."""
    secrets_doc = _read(_secrets_file(shared_dir))
    private_doc = _read(_private_file(shared_dir))
    values = [secrets_doc["audit_key"]] + [
        v for k, v in _gen(secrets_doc).items() if k.endswith(("_key", "_pepper"))
    ]
    assert len(values) == 6

    for text in (repr(bot), repr(staff), str(bot), str(staff)):
        assert staff.fingerprint in text
        for value in values:
            assert value not in text
            assert base64.b64decode(value).hex() not in text
        assert private_doc["ciphertext"] not in text
        assert PASSPHRASE not in text


@pytest.mark.parametrize("which", ["bot", "staff"])
def test_secret_holders_cannot_be_pickled(bot: BotCrypto, staff: StaffKey, which: str) -> None:
    """Given a loaded bot or an unlocked key
    When pickled (e.g. sent to another process or written to a cache)
    Then TypeError is raised."""
    obj = bot if which == "bot" else staff
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(obj, protocol=protocol)


def test_public_keys_carry_no_private_material(team: Path) -> None:
    """Given three members
    Then every public key document (what `keys export-public` prints) has only public fields."""
    for public in staff_public_keys(team):
        doc = public.to_json()
        assert set(doc) == {
            "kind",
            "version",
            "name",
            "suite",
            "public_key",
            "fingerprint",
            "created_at",
        }
        assert "ciphertext" not in json.dumps(doc) and "salt" not in json.dumps(doc)


# ===============================================================================================
# The audit trail
# ===============================================================================================


async def _audited_case(data_dir: Path) -> BotCrypto:
    """A case with five audit entries, one of them a staff reply whose words are sealed."""
    bot = BotCrypto.load(data_dir)
    async with signed_store(data_dir) as store:
        async with store.transaction() as tx:
            await tx.ensure_case(REFERENCE, "reporter-pseudonym", None)
            await tx.add_event(REFERENCE, "bot", "submitted", "routine")
            await tx.add_event(REFERENCE, PRIYA, "taken")
        async with store.transaction() as tx:
            await tx.add_event(
                REFERENCE,
                PRIYA,
                "replied",
                sealed=bot.seal_report(REFERENCE, CANARY),
                for_reporter=bot.seal_transit(reply_context(REFERENCE), CANARY),
            )
            await tx.audit(PRIYA, "case_viewed", REFERENCE)
            await tx.add_event(REFERENCE, PRIYA, "closed", "advice given")
    return bot


def _raw(data_dir: Path) -> sqlite3.Connection:
    """The database as an attacker with the file has it: triggers dropped first."""
    db = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    db.execute("DROP TRIGGER audit_log_is_append_only_update")
    db.execute("DROP TRIGGER audit_log_is_append_only_delete")
    return db


async def _verify(data_dir: Path) -> Any:
    async with signed_store(data_dir) as store:
        return await store.verify_audit()


async def test_audit_entries_verify(one: Path) -> None:
    """Given entries appended through tx.add_event and tx.audit
    When the chain is verified with the bot's audit key
    Then it is intact: five entries in order, numbered 1..5, with a head to note."""
    await _audited_case(one)

    report = await _verify(one)
    async with signed_store(one) as store:
        entries = await store.audit_entries(REFERENCE)

    assert report.ok and report.entries == 5 and report.first_bad_seq is None
    assert len(report.head) == 16
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert [e.action for e in entries] == ["submitted", "taken", "replied", "case_viewed", "closed"]


async def test_audit_entries_carry_no_message_text(one: Path) -> None:
    """Given a staff reply whose words went into the case's records
    Then no audit entry, nor the database file, holds the words."""
    await _audited_case(one)

    with sqlite3.connect(one / DB_NAME) as db:
        rows = db.execute("SELECT * FROM audit_log").fetchall()
    assert all(CANARY.decode() not in repr(row) for row in rows)
    assert CANARY not in (one / DB_NAME).read_bytes()


async def test_audit_log_refuses_update_and_delete_through_sql(one: Path) -> None:
    """Given an audit trail with its triggers in place
    When an entry is updated or deleted through SQL
    Then SQLite refuses: the log is append-only."""
    await _audited_case(one)

    with sqlite3.connect(one / DB_NAME) as db:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE audit_log SET detail = 'edited' WHERE seq = 2")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM audit_log WHERE seq = 5")
    assert (await _verify(one)).ok


@pytest.mark.parametrize(
    ("column", "value"), [("detail", "no action"), ("actor", "Sam"), ("at", "2020-01-01")]
)
async def test_edited_audit_entry_is_detected(one: Path, column: str, value: str) -> None:
    """Given an attacker with the database file who drops the triggers
    When they edit one field of entry 3
    Then verification fails with first_bad_seq 3, and reports the 2 entries before it."""
    await _audited_case(one)
    with _raw(one) as db:
        db.execute(f"UPDATE audit_log SET {column} = ? WHERE seq = 3", (value,))

    report = await _verify(one)

    assert not report.ok
    assert (report.first_bad_seq, report.entries) == (3, 2)


async def test_deleted_audit_entry_is_detected(one: Path) -> None:
    """Given an attacker who deletes entry 2
    Then verification fails with first_bad_seq 2 ("entry 2 is missing")."""
    await _audited_case(one)
    with _raw(one) as db:
        db.execute("DELETE FROM audit_log WHERE seq = 2")

    report = await _verify(one)

    assert not report.ok and report.first_bad_seq == 2
    assert report.problem == "entry 2 is missing"


async def test_deleted_and_renumbered_audit_entry_is_detected(one: Path) -> None:
    """Given an attacker who deletes entry 2 and renumbers the later ones to close the gap
    Then verification fails with first_bad_seq 2."""
    await _audited_case(one)
    with _raw(one) as db:
        db.execute("DELETE FROM audit_log WHERE seq = 2")
        for seq in (3, 4, 5):
            db.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (seq - 1, seq))

    report = await _verify(one)

    assert not report.ok and report.first_bad_seq == 2


async def test_swapped_audit_entries_are_detected(one: Path) -> None:
    """Given an attacker who swaps entries 2 and 3 (each keeping its MAC)
    Then verification fails with first_bad_seq 2."""
    await _audited_case(one)
    with _raw(one) as db:
        columns = "at, actor, action, case_ref, detail, mac"
        two = db.execute(f"SELECT {columns} FROM audit_log WHERE seq = 2").fetchone()
        three = db.execute(f"SELECT {columns} FROM audit_log WHERE seq = 3").fetchone()
        assignment = ", ".join(f"{c} = ?" for c in columns.split(", "))
        db.execute(f"UPDATE audit_log SET {assignment} WHERE seq = 2", (*three,))
        db.execute(f"UPDATE audit_log SET {assignment} WHERE seq = 3", (*two,))

    report = await _verify(one)

    assert not report.ok and report.first_bad_seq == 2


async def test_chain_recomputed_with_plain_sha256_is_detected(one: Path) -> None:
    """Given an attacker who edits entry 4 and recomputes the chain from it onwards with a
    plain SHA-256 (they do not have the audit key)
    Then verification fails with first_bad_seq 4."""
    from bot.storage.audit import AuditEntry, entry_bytes

    await _audited_case(one)
    with _raw(one) as db:
        db.execute("UPDATE audit_log SET actor = 'Sam' WHERE seq = 4")
        rows = db.execute(
            "SELECT seq, at, actor, action, case_ref, detail, mac FROM audit_log ORDER BY seq"
        ).fetchall()
        previous = bytes(rows[2][6])
        for seq, at, actor, action, case_ref, detail, _ in rows[3:]:
            entry = entry_bytes(AuditEntry(seq, at, actor, action, case_ref, detail))
            mac = hashlib.sha256(b"safeguard/audit/v1|" + previous + entry).digest()
            db.execute("UPDATE audit_log SET mac = ? WHERE seq = ?", (mac, seq))
            previous = mac

    report = await _verify(one)

    assert not report.ok and report.first_bad_seq == 4


async def test_chain_under_another_installations_audit_key_does_not_verify(
    one: Path, tmp_path: Path
) -> None:
    """Given an audit trail signed by one installation
    When verified with another installation's audit key
    Then it fails at entry 1."""
    await _audited_case(one)
    other = tmp_path / "other"
    _make_first(other)

    async with SqliteStore(one, chain=BotCrypto.load(other).chain_audit_entry) as store:
        report = await store.verify_audit()

    assert not report.ok and report.first_bad_seq == 1


async def test_cut_off_tail_changes_the_head(one: Path) -> None:
    """Given an attacker who deletes the newest entry
    Then the chain still verifies (a known limit), but the head an operator noted changed."""
    await _audited_case(one)
    noted = (await _verify(one)).head
    with _raw(one) as db:
        db.execute("DELETE FROM audit_log WHERE seq = 5")

    report = await _verify(one)

    assert report.ok and report.entries == 4
    assert report.head != noted


async def test_unsigned_store_cannot_write_or_verify_the_audit_trail(one: Path) -> None:
    """Given a store opened without the bot's secrets
    When it appends to or verifies the audit trail
    Then StorageError is raised and nothing is written."""
    async with SqliteStore(one) as store:
        with pytest.raises(StorageError):
            async with store.transaction() as tx:
                await tx.audit(PRIYA, "case_viewed", REFERENCE)
        with pytest.raises(StorageError):
            await store.verify_audit()
        assert await store.audit_entries() == []


async def test_key_ceremonies_are_audited_without_secrets(tmp_path: Path) -> None:
    """Given keys created and a member added, shared with, rotated and removed
    Then each ceremony is in the verified audit trail, naming the fingerprints involved, and
    no entry holds a passphrase."""
    data_dir = tmp_path / "data"
    priya_public = await key_ceremonies.init_keys(data_dir, PRIYA, PASSPHRASE, **FAST_KDF)
    await _store_record(data_dir, BotCrypto.load(data_dir))
    sam_public, _ = await key_ceremonies.add_staff(
        data_dir, SAM, PASSPHRASES[SAM], by=_unlock(data_dir, PRIYA), **FAST_KDF
    )
    rotated, _ = await key_ceremonies.rotate_staff_key(
        data_dir, _unlock(data_dir, SAM), "sam-new", **FAST_KDF
    )
    await key_ceremonies.remove_staff(data_dir, SAM)

    async with signed_store(data_dir) as store:
        report = await store.verify_audit()
        entries = await store.audit_entries()
    assert report.ok
    assert [e.action for e in entries] == [
        "keys_created",
        "staff_key_added",
        "records_shared",
        "staff_key_rotated",
        "staff_key_removed",
    ]
    details = [e.detail or "" for e in entries]
    assert priya_public.fingerprint in details[0]
    assert sam_public.fingerprint in details[1]
    assert sam_public.fingerprint in details[3] and rotated.fingerprint in details[3]
    assert rotated.fingerprint in details[4]
    text = repr(entries)
    for secret in (*PASSPHRASES.values(), "sam-new"):
        assert secret not in text
