"""Unit tests for bot.crypto, the product's one cryptographic facade."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from bot.crypto import (
    BOT_SECRETS_FILE,
    STAFF_PRIVATE_FILE,
    STAFF_PUBLIC_FILE,
    SUITE_NAME,
    BotCrypto,
    StaffKey,
    create_keys,
    keys_exist,
)
from bot.errors import (
    ConfigError,
    CryptoError,
    KeyFileCorruptError,
    KeysExistError,
    KeysMissingError,
    TamperedError,
    WrongPassphraseError,
)

PASSPHRASE = "correct horse battery staple 7f3a"
FAST_KDF: dict[str, int] = {"kdf_memory_kib": 8192, "kdf_iterations": 1}
REFERENCE = "SG-7K4M-2QX9"
CANARY = b"CANARY-3b1f0e9c-the-reporter-wrote-this"


def _make_keys(data_dir: Path, passphrase: str = PASSPHRASE) -> str:
    return create_keys(data_dir, passphrase, **FAST_KDF)


def _keys(data_dir: Path) -> Path:
    return data_dir / "keys"


def _read(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key set for the tests that only read it."""
    data_dir = tmp_path_factory.mktemp("shared")
    _make_keys(data_dir)
    return data_dir


@pytest.fixture(scope="module")
def bot(shared_dir: Path) -> BotCrypto:
    return BotCrypto.load(shared_dir)


@pytest.fixture(scope="module")
def staff(shared_dir: Path) -> StaffKey:
    return StaffKey.unlock(shared_dir, PASSPHRASE)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh key set a test may damage."""
    _make_keys(tmp_path)
    return tmp_path


# --- creating keys ---------------------------------------------------------------------------


def test_create_keys_writes_three_files_and_returns_the_fingerprint(tmp_path: Path) -> None:
    """Given an empty data dir
    When keys are created
    Then the three key files exist, keys_exist is true, and the returned fingerprint is the
    one in the public file, grouped as four blocks of four hex digits."""
    assert not keys_exist(tmp_path)

    fingerprint = _make_keys(tmp_path)

    assert keys_exist(tmp_path)
    names = sorted(p.name for p in _keys(tmp_path).iterdir())
    assert names == sorted([STAFF_PUBLIC_FILE, STAFF_PRIVATE_FILE, BOT_SECRETS_FILE])
    public = _read(_keys(tmp_path) / STAFF_PUBLIC_FILE)
    assert public["fingerprint"] == fingerprint
    assert public["suite"] == SUITE_NAME
    groups = fingerprint.split(" ")
    assert len(groups) == 4
    assert all(len(g) == 4 and all(c in "0123456789abcdef" for c in g) for g in groups)
    assert len(base64.b64decode(public["public_key"])) == 1184 + 32


def test_fingerprints_agree_between_bot_and_staff(shared_dir: Path, bot: BotCrypto) -> None:
    """Given a key set
    When the bot loads it and staff unlock it
    Then both report the fingerprint stored in the key files."""
    stored = _read(_keys(shared_dir) / STAFF_PUBLIC_FILE)["fingerprint"]

    staff = StaffKey.unlock(shared_dir, PASSPHRASE)

    assert bot.staff_fingerprint == stored
    assert staff.fingerprint == stored


def test_default_kdf_parameters_are_strong(tmp_path: Path) -> None:
    """Given no KDF arguments
    When keys are created
    Then the stored Argon2id parameters are at least 64 MiB, 3 passes, 4 lanes, 16-byte salt,
    and the key unlocks with them."""
    create_keys(tmp_path, PASSPHRASE)

    kdf = _read(_keys(tmp_path) / STAFF_PRIVATE_FILE)["kdf"]
    assert kdf["name"] == "argon2id"
    assert kdf["memory_kib"] >= 65536
    assert kdf["iterations"] >= 3
    assert kdf["lanes"] == 4
    assert len(base64.b64decode(kdf["salt"])) == 16
    assert StaffKey.unlock(tmp_path, PASSPHRASE).fingerprint


def test_create_keys_twice_is_refused(data_dir: Path) -> None:
    """Given existing keys
    When keys are created again
    Then KeysExistError is raised and the existing files are unchanged."""
    before = {p.name: p.read_bytes() for p in _keys(data_dir).iterdir()}

    with pytest.raises(KeysExistError):
        _make_keys(data_dir)

    assert {p.name: p.read_bytes() for p in _keys(data_dir).iterdir()} == before


@pytest.mark.parametrize("survivor", [STAFF_PUBLIC_FILE, STAFF_PRIVATE_FILE, BOT_SECRETS_FILE])
def test_create_keys_refuses_if_any_key_file_exists(data_dir: Path, survivor: str) -> None:
    """Given only one of the key files
    When keys are created
    Then KeysExistError is raised."""
    for name in (STAFF_PUBLIC_FILE, STAFF_PRIVATE_FILE, BOT_SECRETS_FILE):
        if name != survivor:
            (_keys(data_dir) / name).unlink()

    assert keys_exist(data_dir)
    with pytest.raises(KeysExistError):
        _make_keys(data_dir)


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    """Given an empty passphrase
    When keys are created
    Then ConfigError is raised and no key file is written."""
    with pytest.raises(ConfigError):
        create_keys(tmp_path, "", **FAST_KDF)

    assert not keys_exist(tmp_path)


def test_key_files_are_private(data_dir: Path) -> None:
    """Given created keys
    Then every key file is mode 0600 and the keys directory 0700, with no temp files left."""
    keys_dir = _keys(data_dir)
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    files = list(keys_dir.iterdir())
    assert len(files) == 3
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_no_key_file_contains_the_passphrase(data_dir: Path) -> None:
    """Given created keys
    Then no file under the keys directory contains the passphrase, raw or base64-encoded."""
    encoded = PASSPHRASE.encode()
    b64 = base64.b64encode(encoded)
    for path in _keys(data_dir).iterdir():
        content = path.read_bytes()
        assert encoded not in content, path.name
        assert b64 not in content, path.name
        assert b"horse battery" not in content, path.name


# --- sealing and opening reports --------------------------------------------------------------


def test_report_round_trip(bot: BotCrypto, staff: StaffKey) -> None:
    """Given a report sealed by the bot for a case
    When staff open it with the same reference
    Then they get the original content."""
    sealed = bot.seal_report(REFERENCE, CANARY)

    assert staff.open_report(REFERENCE, sealed) == CANARY


def test_empty_report_round_trip(bot: BotCrypto, staff: StaffKey) -> None:
    """Given an empty report
    When sealed and opened
    Then the result is empty."""
    assert staff.open_report(REFERENCE, bot.seal_report(REFERENCE, b"")) == b""


def test_sealed_report_does_not_contain_the_plaintext(bot: BotCrypto) -> None:
    """Given a report containing a unique canary string
    When sealed
    Then the canary (or any large piece of it) does not appear in the blob."""
    sealed = bot.seal_report(REFERENCE, CANARY)

    assert CANARY not in sealed
    assert CANARY[:12] not in sealed
    assert base64.b64encode(CANARY) not in sealed


def test_sealed_report_starts_with_a_format_version(bot: BotCrypto) -> None:
    """Given a sealed report
    Then its first byte is format version 1."""
    assert bot.seal_report(REFERENCE, CANARY)[0] == 1


def test_sealing_twice_gives_different_blobs(bot: BotCrypto, staff: StaffKey) -> None:
    """Given the same report and case
    When sealed twice
    Then the blobs differ and both open."""
    first = bot.seal_report(REFERENCE, CANARY)
    second = bot.seal_report(REFERENCE, CANARY)

    assert first != second
    assert staff.open_report(REFERENCE, first) == staff.open_report(REFERENCE, second) == CANARY


def test_report_moved_to_another_case_does_not_open(bot: BotCrypto, staff: StaffKey) -> None:
    """Given a report sealed for one case
    When opened under another case's reference
    Then TamperedError is raised."""
    sealed = bot.seal_report(REFERENCE, CANARY)

    with pytest.raises(TamperedError):
        staff.open_report("SG-0000-0000", sealed)


@pytest.mark.parametrize("position", [0, 1, 500, 1120, 1121, -17, -1])
def test_one_flipped_byte_is_detected(bot: BotCrypto, staff: StaffKey, position: int) -> None:
    """Given a sealed report
    When any one byte (version, encapsulated key, ciphertext or tag) is flipped
    Then opening raises TamperedError and not the plaintext."""
    sealed = bytearray(bot.seal_report(REFERENCE, CANARY))
    sealed[position] ^= 0x01

    with pytest.raises(TamperedError) as excinfo:
        staff.open_report(REFERENCE, bytes(sealed))
    assert CANARY.decode() not in str(excinfo.value)


@pytest.mark.parametrize("length", [0, 1, 100, 1121, -1])
def test_truncated_report_is_detected(bot: BotCrypto, staff: StaffKey, length: int) -> None:
    """Given a sealed report cut short
    When opened
    Then TamperedError is raised."""
    sealed = bot.seal_report(REFERENCE, CANARY)

    with pytest.raises(TamperedError):
        staff.open_report(REFERENCE, sealed[:length])


def test_report_for_another_staff_key_does_not_open(bot: BotCrypto, tmp_path: Path) -> None:
    """Given a report sealed to one staff key
    When a different staff key tries to open it
    Then TamperedError is raised."""
    _make_keys(tmp_path)
    other_staff = StaffKey.unlock(tmp_path, PASSPHRASE)

    with pytest.raises(TamperedError):
        other_staff.open_report(REFERENCE, bot.seal_report(REFERENCE, CANARY))


# --- unlocking the staff key -------------------------------------------------------------------


def test_wrong_passphrase_is_refused_without_echoing_it(shared_dir: Path) -> None:
    """Given keys created with one passphrase
    When unlocking with another
    Then WrongPassphraseError is raised and its message contains neither passphrase."""
    wrong = "not-the-passphrase-91c2"

    with pytest.raises(WrongPassphraseError) as excinfo:
        StaffKey.unlock(shared_dir, wrong)

    message = str(excinfo.value) + repr(excinfo.value)
    assert wrong not in message
    assert PASSPHRASE not in message


def test_empty_passphrase_does_not_unlock(shared_dir: Path) -> None:
    """Given keys
    When unlocking with an empty passphrase
    Then WrongPassphraseError is raised."""
    with pytest.raises(WrongPassphraseError):
        StaffKey.unlock(shared_dir, "")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("memory_kib", 16384),
        ("iterations", 2),
        ("lanes", 2),
        ("salt", base64.b64encode(b"\x00" * 16).decode()),
        ("name", "argon2i"),
        ("memory_kib", 8192.0),
        ("memory_kib", 1 << 40),
        ("iterations", 10_000),
        ("iterations", 0),
        ("salt", "not base64!"),
    ],
)
def test_edited_kdf_parameters_fail_cleanly(data_dir: Path, field: str, value: Any) -> None:
    """Given a private key file whose KDF parameters were edited
    When unlocking with the right passphrase
    Then a CryptoError (wrong passphrase or corrupt file) is raised, never a key or a crash."""
    path = _keys(data_dir) / STAFF_PRIVATE_FILE
    doc = _read(path)
    doc["kdf"][field] = value
    _write(path, doc)

    with pytest.raises((WrongPassphraseError, KeyFileCorruptError)) as excinfo:
        StaffKey.unlock(data_dir, PASSPHRASE)
    assert PASSPHRASE not in str(excinfo.value)


def test_edited_private_key_fingerprint_is_detected(data_dir: Path) -> None:
    """Given a private key file whose fingerprint field was edited
    When unlocking
    Then it fails with a CryptoError, because the header is authenticated."""
    path = _keys(data_dir) / STAFF_PRIVATE_FILE
    doc = _read(path)
    doc["fingerprint"] = "0000 0000 0000 0000"
    _write(path, doc)

    with pytest.raises(CryptoError):
        StaffKey.unlock(data_dir, PASSPHRASE)


def test_public_key_of_another_key_pair_is_detected_at_unlock(
    data_dir: Path, tmp_path: Path
) -> None:
    """Given staff_public.json replaced by the public file of another key set
    When staff unlock the private key
    Then KeyFileCorruptError says the files do not belong together."""
    other = tmp_path / "other"
    _make_keys(other)
    (_keys(data_dir) / STAFF_PUBLIC_FILE).write_bytes(
        (_keys(other) / STAFF_PUBLIC_FILE).read_bytes()
    )

    with pytest.raises(KeyFileCorruptError):
        StaffKey.unlock(data_dir, PASSPHRASE)


def test_staff_key_unlocks_without_the_public_file(data_dir: Path) -> None:
    """Given only the private key file (e.g. copied to a staff machine)
    When unlocking
    Then it works and opens reports sealed by the bot."""
    sealed = BotCrypto.load(data_dir).seal_report(REFERENCE, CANARY)
    (_keys(data_dir) / STAFF_PUBLIC_FILE).unlink()
    (_keys(data_dir) / BOT_SECRETS_FILE).unlink()

    assert StaffKey.unlock(data_dir, PASSPHRASE).open_report(REFERENCE, sealed) == CANARY


# --- missing and corrupt files ----------------------------------------------------------------


def test_missing_keys_are_reported(tmp_path: Path) -> None:
    """Given a data dir without keys
    When the bot loads or staff unlock
    Then KeysMissingError is raised."""
    with pytest.raises(KeysMissingError):
        BotCrypto.load(tmp_path)
    with pytest.raises(KeysMissingError):
        StaffKey.unlock(tmp_path, PASSPHRASE)


@pytest.mark.parametrize("missing", [STAFF_PUBLIC_FILE, BOT_SECRETS_FILE])
def test_bot_needs_public_key_and_secrets(data_dir: Path, missing: str) -> None:
    """Given a key set missing a file the bot needs
    When the bot loads
    Then KeysMissingError is raised."""
    (_keys(data_dir) / missing).unlink()

    with pytest.raises(KeysMissingError):
        BotCrypto.load(data_dir)


def test_bot_never_needs_the_private_key(data_dir: Path) -> None:
    """Given a server from which staff_private.json has been removed
    When the bot loads
    Then it loads and can still seal reports that staff (elsewhere) can open."""
    private_copy = (_keys(data_dir) / STAFF_PRIVATE_FILE).read_bytes()
    (_keys(data_dir) / STAFF_PRIVATE_FILE).unlink()

    bot = BotCrypto.load(data_dir)
    sealed = bot.seal_report(REFERENCE, CANARY)

    (_keys(data_dir) / STAFF_PRIVATE_FILE).write_bytes(private_copy)
    assert StaffKey.unlock(data_dir, PASSPHRASE).open_report(REFERENCE, sealed) == CANARY


@pytest.mark.parametrize(
    ("filename", "damage"),
    [
        (STAFF_PUBLIC_FILE, "not json"),
        (STAFF_PUBLIC_FILE, "empty"),
        (STAFF_PUBLIC_FILE, "list"),
        (STAFF_PUBLIC_FILE, "truncated file"),
        (STAFF_PUBLIC_FILE, "truncated key"),
        (STAFF_PUBLIC_FILE, "bad fingerprint"),
        (STAFF_PUBLIC_FILE, "wrong suite"),
        (STAFF_PUBLIC_FILE, "wrong version"),
        (STAFF_PUBLIC_FILE, "binary"),
        (BOT_SECRETS_FILE, "not json"),
        (BOT_SECRETS_FILE, "truncated file"),
        (BOT_SECRETS_FILE, "short secret"),
        (BOT_SECRETS_FILE, "repeated secret"),
        (BOT_SECRETS_FILE, "missing field"),
    ],
)
def test_corrupt_bot_files_are_reported(data_dir: Path, filename: str, damage: str) -> None:
    """Given a damaged public key or secrets file
    When the bot loads
    Then KeyFileCorruptError is raised (never a fallback to something weaker)."""
    path = _keys(data_dir) / filename
    raw = path.read_bytes()
    doc = json.loads(raw)
    if damage == "not json":
        path.write_text("{ this is not json")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "list":
        path.write_text("[]")
    elif damage == "truncated file":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "binary":
        path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        if damage == "truncated key":
            doc["public_key"] = doc["public_key"][:-8]
        elif damage == "bad fingerprint":
            doc["fingerprint"] = "ffff ffff ffff ffff"
        elif damage == "wrong suite":
            doc["suite"] = "X25519/HKDF-SHA256/AES-128-GCM"
        elif damage == "wrong version":
            doc["version"] = 99
        elif damage == "short secret":
            doc["draft_key"] = base64.b64encode(b"k" * 16).decode()
        elif damage == "repeated secret":
            doc["reply_handle_key"] = doc["draft_key"]
        elif damage == "missing field":
            del doc["reporter_pepper"]
        _write(path, doc)

    with pytest.raises(KeyFileCorruptError):
        BotCrypto.load(data_dir)


@pytest.mark.parametrize("damage", ["not json", "truncated file", "short ciphertext", "no nonce"])
def test_corrupt_private_key_file_is_reported(data_dir: Path, damage: str) -> None:
    """Given a damaged private key file
    When staff unlock it
    Then KeyFileCorruptError is raised."""
    path = _keys(data_dir) / STAFF_PRIVATE_FILE
    raw = path.read_bytes()
    doc = json.loads(raw)
    if damage == "not json":
        path.write_text("nope")
    elif damage == "truncated file":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "short ciphertext":
        doc["ciphertext"] = base64.b64encode(base64.b64decode(doc["ciphertext"])[:-10]).decode()
        _write(path, doc)
    elif damage == "no nonce":
        del doc["nonce"]
        _write(path, doc)

    with pytest.raises(KeyFileCorruptError):
        StaffKey.unlock(data_dir, PASSPHRASE)


def test_flipped_byte_in_wrapped_private_key_fails(data_dir: Path) -> None:
    """Given a private key file whose encrypted key has one flipped bit
    When staff unlock it with the right passphrase
    Then it fails (the AES-GCM tag does not verify)."""
    path = _keys(data_dir) / STAFF_PRIVATE_FILE
    doc = _read(path)
    wrapped = bytearray(base64.b64decode(doc["ciphertext"]))
    wrapped[3] ^= 0x80
    doc["ciphertext"] = base64.b64encode(bytes(wrapped)).decode()
    _write(path, doc)

    with pytest.raises(WrongPassphraseError):
        StaffKey.unlock(data_dir, PASSPHRASE)


# --- reporter pseudonyms ------------------------------------------------------------------------


def test_pseudonym_is_stable_and_opaque(bot: BotCrypto, shared_dir: Path) -> None:
    """Given a Telegram user id
    When its pseudonym is computed twice, also by a freshly loaded BotCrypto
    Then it is the same 64-hex-char value, not the id."""
    user_id = 123456789

    first = bot.pseudonym_for(user_id)

    assert first == bot.pseudonym_for(user_id)
    assert first == BotCrypto.load(shared_dir).pseudonym_for(user_id)
    assert len(first) == 64
    assert all(c in "0123456789abcdef" for c in first)
    assert first != str(user_id)


def test_pseudonyms_differ_between_users(bot: BotCrypto) -> None:
    """Given two different Telegram user ids
    Then their pseudonyms differ."""
    assert bot.pseudonym_for(123456789) != bot.pseudonym_for(123456780)


def test_pseudonyms_differ_between_installations(bot: BotCrypto, tmp_path: Path) -> None:
    """Given two data dirs (two different peppers)
    Then the same user id gets different pseudonyms."""
    _make_keys(tmp_path)

    assert bot.pseudonym_for(123456789) != BotCrypto.load(tmp_path).pseudonym_for(123456789)


# --- drafts --------------------------------------------------------------------------------------


def test_draft_round_trip(bot: BotCrypto) -> None:
    """Given a draft sealed for a pseudonym
    When opened for the same pseudonym
    Then the content comes back, and the sealed form does not contain it."""
    pseudonym = bot.pseudonym_for(42)

    sealed = bot.seal_draft(pseudonym, CANARY)

    assert CANARY not in sealed
    assert sealed[0] == 1
    assert bot.open_draft(pseudonym, sealed) == CANARY
    assert bot.seal_draft(pseudonym, CANARY) != sealed


def test_draft_is_bound_to_its_pseudonym(bot: BotCrypto) -> None:
    """Given a draft sealed for one reporter
    When opened under another reporter's pseudonym
    Then TamperedError is raised."""
    sealed = bot.seal_draft(bot.pseudonym_for(42), CANARY)

    with pytest.raises(TamperedError):
        bot.open_draft(bot.pseudonym_for(43), sealed)


@pytest.mark.parametrize("mutation", ["flip", "truncate", "empty", "version"])
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
        sealed[0] = 2

    with pytest.raises(TamperedError):
        bot.open_draft(pseudonym, bytes(sealed))


def test_drafts_survive_a_restart(shared_dir: Path, bot: BotCrypto) -> None:
    """Given a draft sealed before a restart
    When a freshly loaded BotCrypto opens it
    Then the content comes back."""
    pseudonym = bot.pseudonym_for(7)
    sealed = bot.seal_draft(pseudonym, b"half-finished answers")

    assert BotCrypto.load(shared_dir).open_draft(pseudonym, sealed) == b"half-finished answers"


# --- reply handles -----------------------------------------------------------------------------


@pytest.mark.parametrize("chat_id", [123456789, -1001234567890, 0, 2**63 - 1, -(2**63)])
def test_reply_handle_round_trip(bot: BotCrypto, chat_id: int) -> None:
    """Given a chat id sealed for a case
    When opened for the same case
    Then the chat id comes back."""
    sealed = bot.seal_reply_handle(REFERENCE, chat_id)

    assert bot.open_reply_handle(REFERENCE, sealed) == chat_id


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
        bot.open_reply_handle("SG-0000-0000", sealed)


def test_reply_handle_and_draft_keys_are_separate(bot: BotCrypto) -> None:
    """Given a reply handle
    When presented as a draft under the same label text
    Then it does not open (different keys and purposes)."""
    sealed = bot.seal_reply_handle(REFERENCE, 123456789)

    with pytest.raises(TamperedError):
        bot.open_draft(REFERENCE, sealed)


def test_chat_id_out_of_range_is_refused(bot: BotCrypto) -> None:
    """Given a chat id that does not fit in 64 bits
    When sealed
    Then CryptoError is raised."""
    with pytest.raises(CryptoError):
        bot.seal_reply_handle(REFERENCE, 2**64)


# --- no secrets in reprs ---------------------------------------------------------------------


def test_reprs_show_only_the_fingerprint(shared_dir: Path, bot: BotCrypto, staff: StaffKey) -> None:
    """Given a loaded BotCrypto and an unlocked StaffKey
    Then their reprs show the fingerprint and none of the secret values."""
    secrets_doc = _read(_keys(shared_dir) / BOT_SECRETS_FILE)
    private_doc = _read(_keys(shared_dir) / STAFF_PRIVATE_FILE)

    for text in (repr(bot), repr(staff), str(bot), str(staff)):
        assert bot.staff_fingerprint in text
        for field in ("reporter_pepper", "draft_key", "reply_handle_key"):
            value = base64.b64decode(secrets_doc[field])
            assert secrets_doc[field] not in text
            assert value.hex() not in text
        assert private_doc["ciphertext"] not in text
        assert PASSPHRASE not in text
