"""The product's one cryptographic facade.

No other module touches a cryptographic primitive: they call the functions and methods here,
whose names say what they do. Only pyca/cryptography is used.

Who holds what
--------------
* The running bot (:class:`BotCrypto`) holds every current staff member's PUBLIC key and the
  bot's own secrets. It can seal records but never open them.
* A staff member's process (:class:`StaffKey`) unlocks that person's PRIVATE key with their
  passphrase and opens the records whose data key was sealed to them.

How a record is sealed
----------------------
Each record (a report, an alert snapshot, a follow-up, a note) is encrypted once with a fresh
random 256-bit data key (AES-256-GCM). The data key is then sealed with HPKE (RFC 9180;
ML-KEM-768 + X25519 hybrid KEM, HKDF-SHA256, AES-256-GCM) to each current staff member's
public key. The store keeps one wrapped data key per record per staff member, apart from the
record, so:

* a leaver is removed by deleting their wrapped keys: nothing is re-encrypted;
* a newcomer is added by an existing member unwrapping each data key and sealing it again to
  the newcomer (:meth:`StaffKey.share_data_key`);
* a record is erased by deleting all its wrapped keys (crypto-shredding), then the record.

Files under ``<data_dir>/keys/`` (directory 0700, files 0600, written atomically)
--------------------------------------------------------------------------------
``bot_secrets.json``
    ``{"kind": "safeguard-bot-secrets", "version": 2, "audit_key": b64(32 B),
    "generations": [{"id": 1, "created_at": ..., "reporter_pepper", "rate_limit_pepper",
    "draft_key", "reply_handle_key", "transit_key": b64(32 B) each}, ...]}``.
    The newest generation seals; older ones only open what was sealed before a rotation (and
    their peppers find a reporter's unfinished conversation once). Every value is distinct:
    the bot refuses to start otherwise.
``staff/<name>.public.json``
    ``{"kind": "safeguard-staff-public", "version": 2, "name", "suite", "public_key":
    b64(ML-KEM-768 public (1184 B) || X25519 public (32 B)), "fingerprint", "created_at"}``.
    Every such file is a recipient of new records.
``staff/<name>.key.json``
    ``{"kind": "safeguard-staff-private", "version": 2, "name", "suite", "fingerprint",
    "cipher": "AES-256-GCM", "kdf": {"name": "argon2id", "memory_kib", "iterations", "lanes",
    "salt"}, "nonce", "ciphertext"}``. The plaintext is ML-KEM-768 seed (64 B) || X25519
    private (32 B); the wrapping key is Argon2id(passphrase); the AAD is the canonical JSON of
    every field but ``nonce`` and ``ciphertext``, so an edited name, parameter or fingerprint
    makes the file fail to open.

Sealed formats (the first byte is a format version)
---------------------------------------------------
* record: ``0x02 || key_id (16 B) || nonce (12 B) || AES-256-GCM(data key)`` with AAD
  ``b"safeguard/record/v2|" + reference + b"|" + key_id``.
* wrapped data key: HPKE single-shot (encapsulated key || ciphertext) of the 32-byte data key,
  ``info = b"safeguard/data-key/v2|" + reference + b"|" + key_id``.
* draft, transit text, reply handle: ``0x02 || generation (2 B) || nonce (12 B) ||
  AES-256-GCM`` under that generation's key, AAD ``b"safeguard/<kind>/v2|" + context``.
* audit chain: ``HMAC-SHA256(audit key, b"safeguard/audit/v1|" + previous mac + entry)``.
* secret check value (kept in the database, not secret): the first 16 bytes of
  ``HMAC-SHA256(secret, b"safeguard/secret-check/v1|" + field name)``, one per secret per
  generation. It tells whether ``bot_secrets.json`` is the file the database was used with
  (:meth:`BotCrypto.match_secret_checks`) and reveals nothing from which a secret, or a
  pseudonym, could be worked out.

No secret value, passphrase or plaintext ever appears in an exception message or a repr, and
this module does not log.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from bot.errors import (
    ConfigError,
    CryptoError,
    KeyFileCorruptError,
    KeysExistError,
    KeysMissingError,
    NotReadableError,
    TamperedError,
    WrongPassphraseError,
)

__all__ = [
    "SUITE_NAME",
    "BotCrypto",
    "SealedRecord",
    "StaffKey",
    "StaffPublicKey",
    "add_staff_key",
    "create_keys",
    "keys_exist",
    "record_key_id",
    "remove_staff_key",
    "replace_staff_key",
    "rotate_bot_secrets",
    "staff_public_keys",
]

SUITE_NAME: Final = "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"

KEYS_DIRNAME: Final = "keys"
STAFF_DIRNAME: Final = "staff"
BOT_SECRETS_FILE: Final = "bot_secrets.json"
_PUBLIC_SUFFIX: Final = ".public.json"
_PRIVATE_SUFFIX: Final = ".key.json"
_RETIRED_SUFFIX: Final = ".retired"
# Files of the single shared staff key used before per-person keys.
_OLD_LAYOUT: Final = ("staff_public.json", "staff_private.json")

_FILE_VERSION: Final = 2
_KIND_PUBLIC: Final = "safeguard-staff-public"
_KIND_PRIVATE: Final = "safeguard-staff-private"
_KIND_SECRETS: Final = "safeguard-bot-secrets"
_CIPHER_NAME: Final = "AES-256-GCM"
_KDF_NAME: Final = "argon2id"

# Argon2id cost. The defaults are the floor for real use; lower values are only reachable
# through the explicit ``kdf_memory_kib`` / ``kdf_iterations`` arguments (tests).
DEFAULT_KDF_MEMORY_KIB: Final = 65536
DEFAULT_KDF_ITERATIONS: Final = 3
_KDF_LANES: Final = 4
_KDF_SALT_LEN: Final = 16
# Bounds checked when reading a key file, so an edited file cannot make unlocking hang or
# exhaust memory. 8 KiB per lane is Argon2's own minimum.
_KDF_MAX_MEMORY_KIB: Final = 4 * 1024 * 1024  # 4 GiB
_KDF_MAX_ITERATIONS: Final = 64
_KDF_MAX_LANES: Final = 64

_MLKEM_SEED_LEN: Final = 64
_MLKEM_PUBLIC_LEN: Final = 1184
_X25519_LEN: Final = 32
_PUBLIC_KEY_LEN: Final = _MLKEM_PUBLIC_LEN + _X25519_LEN
_PRIVATE_KEY_LEN: Final = _MLKEM_SEED_LEN + _X25519_LEN
_SECRET_LEN: Final = 32
_KEY_ID_LEN: Final = 16
_NONCE_LEN: Final = 12
_TAG_LEN: Final = 16
_GEN_LEN: Final = 2
_MAX_KEY_FILE_BYTES: Final = 256 * 1024

_FORMAT_V2: Final = 2
_RECORD_AAD_PREFIX: Final = b"safeguard/record/v2|"
_DATA_KEY_INFO_PREFIX: Final = b"safeguard/data-key/v2|"
_DRAFT_AAD_PREFIX: Final = b"safeguard/draft/v2|"
_REPLY_HANDLE_AAD_PREFIX: Final = b"safeguard/reply-handle/v2|"
_TRANSIT_AAD_PREFIX: Final = b"safeguard/transit/v2|"
_AUDIT_PREFIX: Final = b"safeguard/audit/v1|"
_REPORTER_PREFIX: Final = b"reporter:"
_RATE_LIMIT_PREFIX: Final = b"rate-limit:"
_SECRET_CHECK_PREFIX: Final = b"safeguard/secret-check/v1|"
_SECRET_CHECK_LEN: Final = 16
# The audit key is never rotated: its check value is kept as generation 0.
_AUDIT_KEY_GENERATION: Final = 0

# Two keyed pseudonyms for two purposes, so a rate-limit counter cannot be joined to a case.
_PEPPERS: Final = ("reporter_pepper", "rate_limit_pepper")
_AEAD_SECRETS: Final = ("draft_key", "reply_handle_key", "transit_key")
# How a secret is named in a message (never its value).
_SECRET_LABELS: Final = {
    "audit_key": "the audit key",
    "reporter_pepper": "the reporter pepper",
    "rate_limit_pepper": "the rate-limit pepper",
    "draft_key": "the draft key",
    "reply_handle_key": "the reply-handle key",
    "transit_key": "the transit key",
}
# A staff name is also a file name: letters first, then letters, digits, space, . _ -
_NAME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9 ._-]{0,39}$")

_SUITE: Final = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)

# A check value per secret of bot_secrets.json, by (generation, field name); not secret.
SecretChecks = dict[tuple[int, str], str]


# --------------------------------------------------------------------------------------------
# Staff public keys
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaffPublicKey:
    """A staff member's public key: what the bot seals data keys to."""

    name: str
    fingerprint: str
    public_bytes: bytes
    created_at: str

    def to_json(self) -> dict[str, Any]:
        """The public key file's document, also what `keys export-public` prints."""
        return {
            "kind": _KIND_PUBLIC,
            "version": _FILE_VERSION,
            "name": self.name,
            "suite": SUITE_NAME,
            "public_key": _b64encode(self.public_bytes),
            "fingerprint": self.fingerprint,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class SealedRecord:
    """A record sealed once under a fresh data key, and that key sealed to each recipient."""

    blob: bytes
    key_id: bytes
    wrapped_keys: dict[str, bytes]  # staff key fingerprint -> wrapped data key


def keys_exist(data_dir: Path) -> bool:
    """True if any key file exists under ``<data_dir>/keys/`` (old layout included)."""
    keys_dir = _keys_dir(data_dir)
    if (keys_dir / BOT_SECRETS_FILE).exists():
        return True
    if any((keys_dir / name).exists() for name in _OLD_LAYOUT):
        return True
    staff_dir = keys_dir / STAFF_DIRNAME
    return staff_dir.is_dir() and any(staff_dir.iterdir())


def staff_public_keys(data_dir: Path) -> list[StaffPublicKey]:
    """Every current staff member's public key, by name. Each file is checked."""
    staff_dir = _keys_dir(data_dir) / STAFF_DIRNAME
    if not staff_dir.is_dir():
        return []
    keys = [
        _read_public(path)
        for path in sorted(staff_dir.iterdir())
        if path.name.endswith(_PUBLIC_SUFFIX)
    ]
    names = [k.name.casefold() for k in keys]
    if len(set(names)) != len(names):
        raise KeyFileCorruptError(f"{staff_dir}: two staff keys carry the same name")
    return keys


def record_key_id(sealed: bytes) -> bytes:
    """The id of the data key a sealed record needs (to look up its wrapped copies)."""
    if len(sealed) < 1 + _KEY_ID_LEN + _NONCE_LEN + _TAG_LEN:
        raise TamperedError("the sealed record is truncated")
    if sealed[0] != _FORMAT_V2:
        raise TamperedError(f"the sealed record has an unknown format version ({sealed[0]})")
    return bytes(sealed[1 : 1 + _KEY_ID_LEN])


# --------------------------------------------------------------------------------------------
# Key ceremonies: creating, adding, removing and rotating keys
# --------------------------------------------------------------------------------------------


def create_keys(
    data_dir: Path,
    name: str,
    passphrase: str,
    *,
    kdf_memory_kib: int = DEFAULT_KDF_MEMORY_KIB,
    kdf_iterations: int = DEFAULT_KDF_ITERATIONS,
) -> StaffPublicKey:
    """Create the bot's secrets and the first staff member's key pair.

    Raises :class:`KeysExistError` if any key file already exists and :class:`ConfigError`
    for a bad name, an empty passphrase or KDF parameters out of range.
    """
    _check_new_key(name, passphrase, kdf_memory_kib, kdf_iterations)
    keys_dir = _keys_dir(data_dir)
    if keys_exist(data_dir):
        raise KeysExistError(f"keys already exist in {keys_dir}; refusing to overwrite them")
    _make_private_dirs(keys_dir)
    secrets_doc = {
        "kind": _KIND_SECRETS,
        "version": _FILE_VERSION,
        "audit_key": _b64encode(os.urandom(_SECRET_LEN)),
        "generations": [_new_generation(1)],
    }
    # The staff key first: once the bot can seal, a key that opens exists.
    public = _write_staff_key(data_dir, name, passphrase, kdf_memory_kib, kdf_iterations)
    try:
        _write_private_file(keys_dir / BOT_SECRETS_FILE, _pretty_json(secrets_doc))
    except OSError:
        raise CryptoError(f"could not write the key files in {keys_dir}") from None
    return public


def add_staff_key(
    data_dir: Path,
    name: str,
    passphrase: str,
    *,
    kdf_memory_kib: int = DEFAULT_KDF_MEMORY_KIB,
    kdf_iterations: int = DEFAULT_KDF_ITERATIONS,
) -> StaffPublicKey:
    """Create a key pair for a new staff member; new records are sealed to them too.

    Raises :class:`KeysExistError` if someone of that name already has a key.
    """
    _check_new_key(name, passphrase, kdf_memory_kib, kdf_iterations)
    if not (_keys_dir(data_dir) / BOT_SECRETS_FILE).exists():
        raise KeysMissingError("no keys yet; run `safeguard keys init` first")
    if _find_staff_file(data_dir, name, _PUBLIC_SUFFIX) is not None:
        raise KeysExistError(f"{name} already has a staff key")
    return _write_staff_key(data_dir, name, passphrase, kdf_memory_kib, kdf_iterations)


def remove_staff_key(data_dir: Path, name: str) -> StaffPublicKey:
    """Delete a staff member's key files (public first, so the bot stops sealing to them).

    The caller deletes their wrapped data keys from the store. Raises :class:`ConfigError`
    for the last remaining staff key: without one, nobody could read a new report.
    """
    public_path = _find_staff_file(data_dir, name, _PUBLIC_SUFFIX)
    if public_path is None:
        raise KeysMissingError(f"no staff key named {name!r}")
    public = _read_public(public_path)
    if len(staff_public_keys(data_dir)) == 1:
        raise ConfigError("refusing to remove the last staff key: nobody could read reports")
    private_path = public_path.with_name(public_path.name[: -len(_PUBLIC_SUFFIX)] + _PRIVATE_SUFFIX)
    for path in (public_path, private_path):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    _fsync_dir(public_path.parent)
    return public


def replace_staff_key(
    data_dir: Path,
    old: StaffKey,
    passphrase: str,
    *,
    kdf_memory_kib: int = DEFAULT_KDF_MEMORY_KIB,
    kdf_iterations: int = DEFAULT_KDF_ITERATIONS,
) -> StaffPublicKey:
    """Give the holder of ``old`` a new key pair under ``passphrase`` (rotation).

    The old private key file is kept beside it as ``<name>.key.json.retired`` until
    :func:`forget_retired_staff_key`: the caller moves every data key to the new key in the
    store first, so a failure in between never leaves records that no file can open.
    """
    _check_new_key(old.name, passphrase, kdf_memory_kib, kdf_iterations)
    private_path = _find_staff_file(data_dir, old.name, _PRIVATE_SUFFIX)
    if private_path is None:
        raise KeysMissingError(f"no private key file for {old.name}")
    retired = private_path.with_name(private_path.name + _RETIRED_SUFFIX)
    try:
        _write_private_file(retired, private_path.read_bytes())
    except OSError:
        raise CryptoError(f"could not keep {old.name}'s old key while rotating") from None
    return _write_staff_key(
        data_dir, old.name, passphrase, kdf_memory_kib, kdf_iterations, replace=True
    )


def forget_retired_staff_key(data_dir: Path, name: str) -> None:
    """Delete the old private key a rotation kept, once nothing in the store needs it."""
    private_path = _keys_dir(data_dir) / STAFF_DIRNAME / f"{_slug(name)}{_PRIVATE_SUFFIX}"
    with contextlib.suppress(FileNotFoundError):
        private_path.with_name(private_path.name + _RETIRED_SUFFIX).unlink()
    _fsync_dir(private_path.parent)


def rotate_bot_secrets(data_dir: Path) -> int:
    """Add a new generation of the bot's secrets, which seals from now on; return its id.

    Older generations stay until :func:`forget_retired_secrets`, after everything sealed under
    them has been sealed again (:meth:`BotCrypto.reseal`). The audit key is not rotated: the
    chain must stay verifiable from its first entry.
    """
    path = _keys_dir(data_dir) / BOT_SECRETS_FILE
    doc = _read_json(path)
    _, generations = _parse_secrets(doc, path)
    now = _iso(datetime.now(UTC))
    for gen in generations:
        gen.setdefault("retired_at", now)
    new_id = max(int(g["id"]) for g in generations) + 1
    doc["generations"] = [*generations, _new_generation(new_id)]
    _save_secrets(path, doc)
    return new_id


def forget_retired_secrets(data_dir: Path, *, keep_peppers_days: int = 30) -> None:
    """Drop the encryption keys of retired generations, and their peppers after
    ``keep_peppers_days`` (a reporter in the middle of a report is recognised by an older
    pepper once; unfinished reports are erased long before that)."""
    path = _keys_dir(data_dir) / BOT_SECRETS_FILE
    doc = _read_json(path)
    _, generations = _parse_secrets(doc, path)
    now = datetime.now(UTC)
    kept = []
    for gen in generations[:-1]:
        age = now - datetime.fromisoformat(str(gen["retired_at"]))
        if age.total_seconds() > keep_peppers_days * 86400:
            continue
        kept.append({k: gen[k] for k in gen if k not in _AEAD_SECRETS})
    doc["generations"] = [*kept, generations[-1]]
    _save_secrets(path, doc)


# --------------------------------------------------------------------------------------------
# What the running bot holds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Generation:
    id: int
    reporter_pepper: bytes
    rate_limit_pepper: bytes
    aeads: dict[str, AESGCM] | None  # None once retired and its keys forgotten


class BotCrypto:
    """What the running bot holds: staff public keys and the bot's secrets, never a private
    key. It can seal records but not open them."""

    __slots__ = (
        "_audit_key",
        "_checks",
        "_generations",
        "_recipients",
        "_secrets_path",
        "_staff_dir",
        "_staff_dir_seen",
    )

    def __init__(
        self,
        recipients: list[StaffPublicKey],
        secrets_doc: dict[str, Any],
        *,
        data_dir: Path | None = None,
        seen: _Stamp | None = None,
        secrets_path: Path = Path(BOT_SECRETS_FILE),
    ) -> None:
        """Prefer :meth:`load`; this checks its inputs the same way. With ``data_dir``, staff
        keys added or removed there take effect at the next record sealed, no restart."""
        self._staff_dir = _keys_dir(data_dir) / STAFF_DIRNAME if data_dir else None
        # Stamped before the keys are read (by `load`), so a change in between is seen later.
        self._staff_dir_seen = self._staff_dir_stamp() if seen is None else seen
        self._set_recipients(recipients)
        audit_key, generations = _parse_secrets(secrets_doc, secrets_path)
        self._audit_key = audit_key
        self._secrets_path = secrets_path
        self._checks = _secret_checks(audit_key, generations)
        self._generations = [
            _Generation(
                id=int(g["id"]),
                reporter_pepper=_b64decode(g["reporter_pepper"]),
                rate_limit_pepper=_b64decode(g["rate_limit_pepper"]),
                aeads=(
                    {k: AESGCM(_b64decode(g[k])) for k in _AEAD_SECRETS}
                    if _AEAD_SECRETS[0] in g
                    else None
                ),
            )
            for g in generations
        ]

    @classmethod
    def load(cls, data_dir: Path) -> BotCrypto:
        """Load the staff public keys and the bot's secrets from ``<data_dir>/keys/``.

        Raises :class:`KeysMissingError` if a needed file is absent and
        :class:`KeyFileCorruptError` if one is unreadable, malformed or inconsistent. No
        private key file is read.
        """
        keys_dir = _keys_dir(data_dir)
        if any((keys_dir / name).exists() for name in _OLD_LAYOUT):
            raise KeyFileCorruptError(
                f"{keys_dir} holds a single shared staff key from an earlier version; "
                "per-person keys replace it: start a new data dir with `safeguard keys init`"
            )
        path = keys_dir / BOT_SECRETS_FILE
        staff_dir = keys_dir / STAFF_DIRNAME
        seen = _public_files_stamp(staff_dir)
        return cls(
            staff_public_keys(data_dir),
            _read_json(path),
            data_dir=data_dir,
            seen=seen,
            secrets_path=path,
        )

    def __repr__(self) -> str:
        return f"BotCrypto(recipients={[r.fingerprint for r, _ in self._recipients]!r})"

    def __reduce__(self) -> Any:
        raise TypeError("BotCrypto holds secrets and cannot be pickled")

    @property
    def recipients(self) -> list[StaffPublicKey]:
        """The staff members every new record is sealed to."""
        return [r for r, _ in self._recipients]

    @property
    def generation(self) -> int:
        """The generation of the bot's secrets that seals (changes with `keys rotate`)."""
        return self._generations[-1].id

    # -- pseudonyms ------------------------------------------------------------------------
    def pseudonym_for(self, telegram_user_id: int) -> str:
        """A stable pseudonym (64 hex chars) for a reporter; the id cannot be recovered."""
        return _keyed_hash(
            self._generations[-1].reporter_pepper, _REPORTER_PREFIX, telegram_user_id
        )

    def earlier_pseudonyms_for(self, telegram_user_id: int) -> list[str]:
        """The reporter's pseudonyms under peppers rotated out, newest first: to find an
        unfinished report begun before a rotation."""
        return [
            _keyed_hash(g.reporter_pepper, _REPORTER_PREFIX, telegram_user_id)
            for g in reversed(self._generations[:-1])
        ]

    def rate_limit_pseudonym_for(self, telegram_user_id: int) -> str:
        """A second pseudonym for counting messages (flood control), under its own pepper,
        so counters cannot be joined to cases."""
        return _keyed_hash(
            self._generations[-1].rate_limit_pepper, _RATE_LIMIT_PREFIX, telegram_user_id
        )

    # -- short-lived text the bot itself reads again --------------------------------------
    def seal_draft(self, pseudonym: str, plaintext: bytes) -> bytes:
        """Encrypt a reporter's unfinished answers, bound to their pseudonym."""
        return self._seal("draft_key", plaintext, _DRAFT_AAD_PREFIX + pseudonym.encode())

    def open_draft(self, pseudonym: str, sealed: bytes) -> bytes:
        """Decrypt a draft sealed for ``pseudonym``; :class:`TamperedError` on any failure."""
        return self._open("draft_key", sealed, _DRAFT_AAD_PREFIX + pseudonym.encode(), "draft")

    def seal_transit(self, context: str, plaintext: bytes) -> bytes:
        """Encrypt words the bot itself must read again soon, bound to ``context``: an alert's
        trigger until it is acknowledged, a follow-up until it is posted to staff, a staff
        reply the reporter may read again while the case is open. Erased when done."""
        return self._seal("transit_key", plaintext, _TRANSIT_AAD_PREFIX + context.encode())

    def open_transit(self, context: str, sealed: bytes) -> bytes:
        """Decrypt what :meth:`seal_transit` sealed for ``context``; :class:`TamperedError`."""
        return self._open(
            "transit_key", sealed, _TRANSIT_AAD_PREFIX + context.encode(), "transit text"
        )

    def seal_reply_handle(self, reference: str, chat_id: int) -> bytes:
        """Encrypt the Telegram chat id a staff reply for case ``reference`` goes to."""
        try:
            chat_bytes = int(chat_id).to_bytes(8, "big", signed=True)
        except OverflowError:
            raise CryptoError("the chat id does not fit in 64 bits") from None
        return self._seal(
            "reply_handle_key", chat_bytes, _REPLY_HANDLE_AAD_PREFIX + reference.encode()
        )

    def open_reply_handle(self, reference: str, sealed: bytes) -> int:
        """Decrypt the chat id sealed for case ``reference``; :class:`TamperedError` on failure."""
        chat_bytes = self._open(
            "reply_handle_key",
            sealed,
            _REPLY_HANDLE_AAD_PREFIX + reference.encode(),
            "reply handle",
        )
        if len(chat_bytes) != 8:
            raise TamperedError("the reply handle has an unexpected length")
        return int.from_bytes(chat_bytes, "big", signed=True)

    def reseal(self, kind: str, context: str, sealed: bytes) -> bytes | None:
        """Seal again under the newest generation what an older one sealed (after `keys
        rotate`). ``kind`` is "draft", "transit" or "reply_handle"; ``context`` what it was
        bound to (pseudonym, transit context, reference). None if already current."""
        if _generation_of(sealed) == self.generation:
            return None
        key, prefix = {
            "draft": ("draft_key", _DRAFT_AAD_PREFIX),
            "transit": ("transit_key", _TRANSIT_AAD_PREFIX),
            "reply_handle": ("reply_handle_key", _REPLY_HANDLE_AAD_PREFIX),
        }[kind]
        aad = prefix + context.encode()
        return self._seal(key, self._open(key, sealed, aad, kind.replace("_", " ")), aad)

    # -- records for staff -----------------------------------------------------------------
    def seal_report(self, reference: str, plaintext: bytes) -> SealedRecord:
        """Encrypt a record of case ``reference`` for every current staff member.

        One fresh data key encrypts the content; HPKE seals that key to each staff public
        key. The bot keeps nothing that could open it again.
        """
        self._follow_staff_changes()
        data_key = AESGCM.generate_key(bit_length=256)
        key_id = os.urandom(_KEY_ID_LEN)
        nonce = os.urandom(_NONCE_LEN)
        body = AESGCM(data_key).encrypt(nonce, plaintext, _record_aad(reference, key_id))
        wrapped = {
            staff.fingerprint: _SUITE.encrypt(
                data_key, public, info=_data_key_info(reference, key_id)
            )
            for staff, public in self._recipients
        }
        return SealedRecord(bytes([_FORMAT_V2]) + key_id + nonce + body, key_id, wrapped)

    def chain_audit_entry(self, previous_mac: bytes, entry: bytes) -> bytes:
        """The MAC of an audit entry, chained to the one before it."""
        mac = crypto_hmac.HMAC(self._audit_key, hashes.SHA256())
        mac.update(_AUDIT_PREFIX + previous_mac + entry)
        return mac.finalize()

    # -- does this bot_secrets.json belong to the database? -------------------------------
    @property
    def secret_checks(self) -> SecretChecks:
        """A check value per secret, by (generation, field name); the audit key is generation
        0. Not secret: what the database keeps to recognise these secrets again."""
        return dict(self._checks)

    def match_secret_checks(
        self,
        recorded: Mapping[tuple[int, str], str],
        *,
        database: str = "the database",
        advice: str = "restore the bot_secrets.json that belongs to this data dir",
    ) -> SecretChecks:
        """The one check that these secrets are the ones a database was used with.

        ``recorded`` is what the database kept (:attr:`secret_checks` of earlier runs). Every
        secret both know must have the same check value, and the newest generation the
        database knows must still be in the file (older ones are forgotten after a rotation;
        a database restored from a backup needs the generation current when it was made).
        Raises :class:`KeyFileCorruptError`, one line naming the file and what differs (never
        a value). Returns the check values the database does not have yet, to record: all of
        them on first use, the new generation after `keys rotate`.
        """

        def refuse(problem: str) -> KeyFileCorruptError:
            return KeyFileCorruptError(
                f"{self._secrets_path} does not match {database}: {problem}; {advice}"
            )

        if not recorded:
            return dict(self._checks)
        shared = [k for k in sorted(recorded) if k in self._checks]
        differ = [k for k in shared if recorded[k] != self._checks[k]]
        if differ and len(differ) == len(shared) > 1:
            raise refuse(
                "none of its secrets are the ones the database was used with "
                "(it belongs to another data dir)"
            )
        if differ:
            names = [_secret_label(*k) for k in differ]
            listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            raise refuse(f"{listed} {'differs' if len(names) == 1 else 'differ'}")
        needed = max(gen for gen, _ in recorded)
        held = sorted({gen for gen, _ in self._checks if gen != _AUDIT_KEY_GENERATION})
        if needed != _AUDIT_KEY_GENERATION and needed not in held:
            if needed > held[-1]:
                raise refuse(
                    f"it holds generations up to {held[-1]}, but the database was last used "
                    f"with generation {needed} (an older bot_secrets.json, from before "
                    "`safeguard keys rotate`)"
                )
            raise refuse(
                f"the database was last used with generation {needed}, which it no longer "
                "holds (a generation is forgotten 30 days after a rotation; the database is "
                "from before that)"
            )
        return {k: v for k, v in self._checks.items() if k not in recorded}

    # -- internals ---------------------------------------------------------------------------
    def _set_recipients(self, recipients: list[StaffPublicKey]) -> None:
        if not recipients:
            raise KeysMissingError(
                "no staff public key: nobody could read a report; add one with "
                "`safeguard keys add-staff NAME`"
            )
        self._recipients = [(r, _public_key_from_bytes(r.public_bytes)) for r in recipients]

    def _staff_dir_stamp(self) -> _Stamp | None:
        return None if self._staff_dir is None else _public_files_stamp(self._staff_dir)

    def _follow_staff_changes(self) -> None:
        # A leaver must stop receiving new records at once, not at the next restart. A key
        # directory that became unreadable keeps the last good list rather than seal to none.
        stamp = self._staff_dir_stamp()
        if stamp == self._staff_dir_seen or self._staff_dir is None:
            return
        try:
            self._set_recipients(staff_public_keys(self._staff_dir.parent.parent))
        except CryptoError:
            return  # mid-change or damaged: a report must still be saved; checked again next
        self._staff_dir_seen = stamp

    def _seal(self, key: str, plaintext: bytes, aad: bytes) -> bytes:
        current = self._generations[-1]
        assert current.aeads is not None  # the newest generation always has its keys
        nonce = os.urandom(_NONCE_LEN)
        header = bytes([_FORMAT_V2]) + current.id.to_bytes(_GEN_LEN, "big")
        return header + nonce + current.aeads[key].encrypt(nonce, plaintext, header + aad)

    def _open(self, key: str, sealed: bytes, aad: bytes, what: str) -> bytes:
        gen_id = _generation_of(sealed, what)
        generation = next((g for g in self._generations if g.id == gen_id), None)
        if generation is None or generation.aeads is None:
            raise TamperedError(f"the sealed {what} was sealed under secrets since forgotten")
        header = bytes(sealed[: 1 + _GEN_LEN])
        nonce = bytes(sealed[1 + _GEN_LEN : 1 + _GEN_LEN + _NONCE_LEN])
        try:
            return generation.aeads[key].decrypt(
                nonce, bytes(sealed[1 + _GEN_LEN + _NONCE_LEN :]), header + aad
            )
        except InvalidTag:
            raise TamperedError(f"the sealed {what} failed authentication") from None


# --------------------------------------------------------------------------------------------
# What a staff member's process holds
# --------------------------------------------------------------------------------------------


class StaffKey:
    """One staff member's unlocked private key; exists only in that person's process."""

    __slots__ = ("_fingerprint", "_name", "_private")

    def __init__(self, name: str, private_bytes: bytes) -> None:
        """Prefer :meth:`unlock`. ``private_bytes`` is ML-KEM-768 seed || X25519 private."""
        if len(private_bytes) != _PRIVATE_KEY_LEN:
            raise KeyFileCorruptError("the staff private key has the wrong length")
        try:
            mlkem_private = mlkem.MLKEM768PrivateKey.from_seed_bytes(
                private_bytes[:_MLKEM_SEED_LEN]
            )
            x25519_private = x25519.X25519PrivateKey.from_private_bytes(
                private_bytes[_MLKEM_SEED_LEN:]
            )
        except ValueError:
            raise KeyFileCorruptError("the staff private key is malformed") from None
        public_bytes = (
            mlkem_private.public_key().public_bytes_raw()
            + x25519_private.public_key().public_bytes_raw()
        )
        self._name = name
        self._private = hpke.MLKEM768X25519PrivateKey(mlkem_private, x25519_private)
        self._fingerprint = _fingerprint(public_bytes)

    @staticmethod
    def names(data_dir: Path) -> list[str]:
        """Names of the staff members whose private key file is in this data dir."""
        staff_dir = _keys_dir(data_dir) / STAFF_DIRNAME
        if not staff_dir.is_dir():
            return []
        return [
            _read_public(p).name
            for p in sorted(staff_dir.iterdir())
            if p.name.endswith(_PUBLIC_SUFFIX)
            and p.with_name(p.name[: -len(_PUBLIC_SUFFIX)] + _PRIVATE_SUFFIX).exists()
        ]

    @classmethod
    def unlock(cls, data_dir: Path, name: str, passphrase: str) -> StaffKey:
        """Decrypt ``name``'s private key with their passphrase.

        Raises :class:`KeysMissingError` if there is no key of that name,
        :class:`KeyFileCorruptError` if the file is malformed (or does not match the public
        key file), and :class:`WrongPassphraseError` if it does not open — which is also what
        an edited salt, KDF parameter, name or fingerprint looks like.
        """
        path = _find_staff_file(data_dir, name, _PRIVATE_SUFFIX)
        if path is None:
            raise KeysMissingError(f"no staff key named {name!r} in this data dir")
        doc = _read_json(path)
        _expect_keys(
            doc,
            {
                "kind",
                "version",
                "name",
                "suite",
                "fingerprint",
                "cipher",
                "kdf",
                "nonce",
                "ciphertext",
            },
            path,
        )
        _expect_header(doc, _KIND_PRIVATE, path)
        if doc["suite"] != SUITE_NAME or doc["cipher"] != _CIPHER_NAME:
            raise KeyFileCorruptError(f"{path} uses an unsupported suite or cipher")
        if not isinstance(doc["fingerprint"], str) or not isinstance(doc["name"], str):
            raise KeyFileCorruptError(f"{path}: malformed name or fingerprint")
        kdf = doc["kdf"]
        if not isinstance(kdf, dict):
            raise KeyFileCorruptError(f"{path}: malformed KDF parameters")
        _expect_keys(kdf, {"name", "memory_kib", "iterations", "lanes", "salt"}, path)
        if kdf["name"] != _KDF_NAME:
            raise KeyFileCorruptError(f"{path} uses an unsupported KDF")
        memory_kib, iterations, lanes = kdf["memory_kib"], kdf["iterations"], kdf["lanes"]
        if not all(_is_int(v) for v in (memory_kib, iterations, lanes)):
            raise KeyFileCorruptError(f"{path}: malformed KDF parameters")
        _check_kdf_params(memory_kib, iterations, lanes, error=KeyFileCorruptError)
        salt = _b64field(kdf, "salt", path, _KDF_SALT_LEN)
        nonce = _b64field(doc, "nonce", path, _NONCE_LEN)
        wrapped = _b64field(doc, "ciphertext", path, _PRIVATE_KEY_LEN + _TAG_LEN)

        if not passphrase:
            raise WrongPassphraseError(f"the passphrase does not unlock {name}'s key")
        header = {k: v for k, v in doc.items() if k not in ("nonce", "ciphertext")}
        wrapping_key = _derive_wrapping_key(passphrase, salt, memory_kib, iterations, lanes)
        try:
            private_bytes = AESGCM(wrapping_key).decrypt(nonce, wrapped, _canonical_json(header))
        except InvalidTag:
            raise WrongPassphraseError(
                f"the passphrase does not unlock {name}'s key (or the key file has been altered)"
            ) from None

        key = cls(doc["name"], private_bytes)
        if key.fingerprint != doc["fingerprint"]:
            raise KeyFileCorruptError(f"{path}: the fingerprint does not match the key")
        public_path = _find_staff_file(data_dir, name, _PUBLIC_SUFFIX)
        if public_path is not None and _read_public(public_path).fingerprint != key.fingerprint:
            raise KeyFileCorruptError(
                f"{public_path} does not belong to this private key (fingerprints differ)"
            )
        return key

    def __repr__(self) -> str:
        return f"StaffKey(name={self._name!r}, fingerprint={self._fingerprint!r})"

    def __reduce__(self) -> Any:
        raise TypeError("StaffKey holds a private key and cannot be pickled")

    @property
    def name(self) -> str:
        return self._name

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the matching public key, e.g. ``ab12 cd34 ef56 7890``."""
        return self._fingerprint

    def open_report(self, reference: str, sealed: bytes, wrapped_key: bytes | None) -> bytes:
        """Decrypt a record of case ``reference`` with this member's wrapped copy of its key.

        Raises :class:`NotReadableError` if the record was not sealed to this key
        (``wrapped_key`` None) and :class:`TamperedError` if anything was altered, truncated,
        or belongs to another case.
        """
        key_id = record_key_id(sealed)
        if wrapped_key is None:
            raise NotReadableError(
                f"this record was not sealed to {self._name}'s key (added after it was "
                "written; another member can share the archive with `keys add-staff --by`)"
            )
        data_key = self._unwrap(reference, key_id, wrapped_key)
        nonce = bytes(sealed[1 + _KEY_ID_LEN : 1 + _KEY_ID_LEN + _NONCE_LEN])
        try:
            return AESGCM(data_key).decrypt(
                nonce,
                bytes(sealed[1 + _KEY_ID_LEN + _NONCE_LEN :]),
                _record_aad(reference, key_id),
            )
        except InvalidTag:
            raise TamperedError(
                "the sealed record failed authentication (altered, or another case's record)"
            ) from None

    def check_data_key(self, reference: str, key_id: bytes, wrapped_key: bytes) -> None:
        """Raise :class:`TamperedError` unless this member's wrapped data key opens."""
        self._unwrap(reference, key_id, wrapped_key)

    def share_data_key(
        self, reference: str, key_id: bytes, wrapped_key: bytes, to: StaffPublicKey
    ) -> bytes:
        """Seal a data key this member holds to another staff member (adding a newcomer to
        the archive, or moving to a rotated key). The data key never leaves this module."""
        data_key = self._unwrap(reference, key_id, wrapped_key)
        public = _public_key_from_bytes(to.public_bytes)
        return _SUITE.encrypt(data_key, public, info=_data_key_info(reference, key_id))

    def _unwrap(self, reference: str, key_id: bytes, wrapped_key: bytes) -> bytes:
        try:
            data_key = _SUITE.decrypt(
                bytes(wrapped_key), self._private, info=_data_key_info(reference, key_id)
            )
        except (InvalidTag, ValueError):
            raise TamperedError(
                "the wrapped data key failed authentication (altered, or another member's)"
            ) from None
        if len(data_key) != _SECRET_LEN:
            raise TamperedError("the wrapped data key has the wrong length")
        return data_key


# --------------------------------------------------------------------------------------------
# Key files
# --------------------------------------------------------------------------------------------


def _check_new_key(name: str, passphrase: str, memory_kib: int, iterations: int) -> None:
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(
            "a staff key name is 1-40 letters, digits, spaces, dots, dashes or underscores, "
            "starting with a letter"
        )
    if not passphrase:
        raise ConfigError("the staff passphrase must not be empty")
    _check_kdf_params(memory_kib, iterations, _KDF_LANES, error=ConfigError)


def _slug(name: str) -> str:
    return "-".join(name.split()).casefold()


def _find_staff_file(data_dir: Path, name: str, suffix: str) -> Path | None:
    path = _keys_dir(data_dir) / STAFF_DIRNAME / f"{_slug(name)}{suffix}"
    return path if path.exists() else None


def _write_staff_key(
    data_dir: Path,
    name: str,
    passphrase: str,
    memory_kib: int,
    iterations: int,
    *,
    replace: bool = False,
) -> StaffPublicKey:
    staff_dir = _keys_dir(data_dir) / STAFF_DIRNAME
    _make_private_dirs(staff_dir)
    public_path = staff_dir / f"{_slug(name)}{_PUBLIC_SUFFIX}"
    private_path = staff_dir / f"{_slug(name)}{_PRIVATE_SUFFIX}"
    if not replace and (public_path.exists() or private_path.exists()):
        raise KeysExistError(f"{name} already has a staff key")

    mlkem_private = mlkem.MLKEM768PrivateKey.generate()
    x25519_private = x25519.X25519PrivateKey.generate()
    public_bytes = (
        mlkem_private.public_key().public_bytes_raw()
        + x25519_private.public_key().public_bytes_raw()
    )
    private_bytes = mlkem_private.private_bytes_raw() + x25519_private.private_bytes_raw()
    public = StaffPublicKey(name, _fingerprint(public_bytes), public_bytes, _iso(datetime.now(UTC)))

    salt = os.urandom(_KDF_SALT_LEN)
    header: dict[str, Any] = {
        "kind": _KIND_PRIVATE,
        "version": _FILE_VERSION,
        "name": name,
        "suite": SUITE_NAME,
        "fingerprint": public.fingerprint,
        "cipher": _CIPHER_NAME,
        "kdf": {
            "name": _KDF_NAME,
            "memory_kib": memory_kib,
            "iterations": iterations,
            "lanes": _KDF_LANES,
            "salt": _b64encode(salt),
        },
    }
    wrapping_key = _derive_wrapping_key(passphrase, salt, memory_kib, iterations, _KDF_LANES)
    nonce = os.urandom(_NONCE_LEN)
    wrapped = AESGCM(wrapping_key).encrypt(nonce, private_bytes, _canonical_json(header))
    private_doc = {**header, "nonce": _b64encode(nonce), "ciphertext": _b64encode(wrapped)}
    try:
        # Private first: once the bot seals to the public key, the key that opens exists.
        _write_private_file(private_path, _pretty_json(private_doc))
        _write_private_file(public_path, _pretty_json(public.to_json()))
    except OSError:
        raise CryptoError(f"could not write {name}'s key files in {staff_dir}") from None
    return public


def _read_public(path: Path) -> StaffPublicKey:
    doc = _read_json(path)
    _expect_keys(
        doc,
        {"kind", "version", "name", "suite", "public_key", "fingerprint", "created_at"},
        path,
    )
    _expect_header(doc, _KIND_PUBLIC, path)
    if doc["suite"] != SUITE_NAME:
        raise KeyFileCorruptError(f"{path} uses an unsupported suite")
    if not isinstance(doc["name"], str) or not _NAME_RE.fullmatch(doc["name"]):
        raise KeyFileCorruptError(f"{path}: malformed name")
    public_bytes = _b64field(doc, "public_key", path, _PUBLIC_KEY_LEN)
    if doc["fingerprint"] != _fingerprint(public_bytes):
        raise KeyFileCorruptError(f"{path}: the fingerprint does not match the key")
    _public_key_from_bytes(public_bytes)
    return StaffPublicKey(doc["name"], doc["fingerprint"], public_bytes, str(doc["created_at"]))


def _new_generation(gen_id: int) -> dict[str, Any]:
    values = [os.urandom(_SECRET_LEN) for _ in (*_PEPPERS, *_AEAD_SECRETS)]
    return {
        "id": gen_id,
        "created_at": _iso(datetime.now(UTC)),
        **{k: _b64encode(v) for k, v in zip((*_PEPPERS, *_AEAD_SECRETS), values, strict=True)},
    }


def _parse_secrets(doc: dict[str, Any], path: Path) -> tuple[bytes, list[dict[str, Any]]]:
    """Check a bot-secrets document; return the audit key and the generations, oldest first.

    Every value must be 32 bytes and distinct from every other, across purposes and
    generations: a pepper reused as a key, or the two peppers equal, is refused.
    """
    _expect_keys(doc, {"kind", "version", "audit_key", "generations"}, path)
    _expect_header(doc, _KIND_SECRETS, path)
    audit_key = _b64field(doc, "audit_key", path, _SECRET_LEN)
    generations = doc["generations"]
    if not isinstance(generations, list) or not generations:
        raise KeyFileCorruptError(f"{path}: no generations of secrets")
    seen = [audit_key]
    ids = []
    for i, gen in enumerate(generations):
        newest = i == len(generations) - 1
        if not isinstance(gen, dict) or not _is_int(gen.get("id")):
            raise KeyFileCorruptError(f"{path}: a malformed generation")
        has_keys = all(k in gen for k in _AEAD_SECRETS)
        allowed = {"id", "created_at", "retired_at", *_PEPPERS, *_AEAD_SECRETS}
        if set(gen) - allowed or not all(k in gen for k in _PEPPERS):
            raise KeyFileCorruptError(f"{path}: generation {gen['id']} has unexpected fields")
        if newest and (not has_keys or "retired_at" in gen):
            raise KeyFileCorruptError(f"{path}: the newest generation cannot seal")
        if not newest and "retired_at" not in gen:
            raise KeyFileCorruptError(f"{path}: generation {gen['id']} is not marked retired")
        for field in (*_PEPPERS, *(_AEAD_SECRETS if has_keys else ())):
            seen.append(_b64field(gen, field, path, _SECRET_LEN))
        ids.append(gen["id"])
    if len(set(seen)) != len(seen):
        raise KeyFileCorruptError(f"{path}: the secrets are not distinct values")
    if ids != sorted(set(ids)) or not 0 < ids[-1] < 2 ** (8 * _GEN_LEN):
        raise KeyFileCorruptError(f"{path}: generation ids out of order")
    return audit_key, generations


def _save_secrets(path: Path, doc: dict[str, Any]) -> None:
    _parse_secrets(doc, path)  # the same checks the bot makes at start-up
    try:
        _write_private_file(path, _pretty_json(doc))
    except OSError:
        raise CryptoError(f"could not write {path}") from None


def _generation_of(sealed: bytes, what: str = "text") -> int:
    if len(sealed) < 1 + _GEN_LEN + _NONCE_LEN + _TAG_LEN:
        raise TamperedError(f"the sealed {what} is truncated")
    if sealed[0] != _FORMAT_V2:
        raise TamperedError(f"the sealed {what} has an unknown format version ({sealed[0]})")
    return int.from_bytes(sealed[1 : 1 + _GEN_LEN], "big")


_Stamp = tuple[tuple[str, int, int, int], ...]


def _public_files_stamp(staff_dir: Path) -> _Stamp | None:
    """Each public key file's identity. Not the directory's timestamp, which can miss two
    changes in one clock tick: a rotated key is a new file (new inode) under the same name."""
    try:
        entries = sorted(os.scandir(staff_dir), key=lambda e: e.name)
        return tuple(
            (e.name, e.inode(), e.stat().st_mtime_ns, e.stat().st_size)
            for e in entries
            if e.name.endswith(_PUBLIC_SUFFIX)
        )
    except OSError:
        return None


def _secret_checks(audit_key: bytes, generations: list[dict[str, Any]]) -> SecretChecks:
    """Each secret's check value: HMAC under the secret of a fixed label and its field name,
    so a value moved to another field, or to another generation's, no longer matches."""
    values = {(_AUDIT_KEY_GENERATION, "audit_key"): audit_key}
    for gen in generations:
        for field in (*_PEPPERS, *_AEAD_SECRETS):
            if field in gen:
                values[(int(gen["id"]), field)] = _b64decode(gen[field])
    checks: SecretChecks = {}
    for (gen_id, field), secret in values.items():
        mac = crypto_hmac.HMAC(secret, hashes.SHA256())
        mac.update(_SECRET_CHECK_PREFIX + field.encode("ascii"))
        checks[(gen_id, field)] = mac.finalize()[:_SECRET_CHECK_LEN].hex()
    return checks


def _secret_label(gen_id: int, field: str) -> str:
    label = _SECRET_LABELS.get(field, "a secret")
    return label if gen_id == _AUDIT_KEY_GENERATION else f"{label} of generation {gen_id}"


def _keyed_hash(pepper: bytes, purpose: bytes, telegram_user_id: int) -> str:
    mac = crypto_hmac.HMAC(pepper, hashes.SHA256())
    mac.update(purpose + str(int(telegram_user_id)).encode("ascii"))
    return mac.finalize().hex()


def _record_aad(reference: str, key_id: bytes) -> bytes:
    return _RECORD_AAD_PREFIX + reference.encode() + b"|" + key_id


def _data_key_info(reference: str, key_id: bytes) -> bytes:
    return _DATA_KEY_INFO_PREFIX + reference.encode() + b"|" + key_id


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _b64decode(value: str) -> bytes:
    return base64.b64decode(value.encode("ascii"), validate=True)


def _make_private_dirs(directory: Path) -> None:
    try:
        _ensure_private_dir(directory.parent)
        _ensure_private_dir(directory)
    except OSError:
        raise CryptoError(f"could not create the keys directory {directory}") from None


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _keys_dir(data_dir: Path) -> Path:
    return Path(data_dir) / KEYS_DIRNAME


def _fingerprint(public_bytes: bytes) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(public_bytes)
    hex16 = digest.finalize().hex()[:16]
    return " ".join(hex16[i : i + 4] for i in range(0, 16, 4))


def _public_key_from_bytes(public_bytes: bytes) -> hpke.MLKEM768X25519PublicKey:
    if len(public_bytes) != _PUBLIC_KEY_LEN:
        raise KeyFileCorruptError("the staff public key has the wrong length")
    try:
        mlkem_public = mlkem.MLKEM768PublicKey.from_public_bytes(public_bytes[:_MLKEM_PUBLIC_LEN])
        x25519_public = x25519.X25519PublicKey.from_public_bytes(public_bytes[_MLKEM_PUBLIC_LEN:])
    except ValueError:
        raise KeyFileCorruptError("the staff public key is malformed") from None
    return hpke.MLKEM768X25519PublicKey(mlkem_public, x25519_public)


def _normalise_passphrase(passphrase: str) -> bytes:
    # NFC so the same passphrase typed on different systems derives the same key.
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _derive_wrapping_key(
    passphrase: str, salt: bytes, memory_kib: int, iterations: int, lanes: int
) -> bytes:
    kdf = Argon2id(salt=salt, length=32, iterations=iterations, lanes=lanes, memory_cost=memory_kib)
    return kdf.derive(_normalise_passphrase(passphrase))


def _check_kdf_params(
    memory_kib: int, iterations: int, lanes: int, *, error: type[CryptoError] | type[ConfigError]
) -> None:
    if not 1 <= lanes <= _KDF_MAX_LANES:
        raise error("Argon2id lanes out of range")
    if not 8 * lanes <= memory_kib <= _KDF_MAX_MEMORY_KIB:
        raise error("Argon2id memory cost out of range")
    if not 1 <= iterations <= _KDF_MAX_ITERATIONS:
        raise error("Argon2id iteration count out of range")


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _pretty_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeysMissingError(
            f"{path} does not exist; run `safeguard keys init` for this data directory"
        ) from None
    except OSError:
        raise KeyFileCorruptError(f"{path} cannot be read") from None
    if len(raw) > _MAX_KEY_FILE_BYTES:
        raise KeyFileCorruptError(f"{path} is too large to be a key file")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise KeyFileCorruptError(f"{path} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise KeyFileCorruptError(f"{path} is not a JSON object")
    return doc


def _expect_keys(doc: dict[str, Any], expected: set[str], path: Path) -> None:
    if set(doc) != expected:
        raise KeyFileCorruptError(f"{path} does not have the expected fields")


def _expect_header(doc: dict[str, Any], kind: str, path: Path) -> None:
    if doc.get("kind") != kind:
        raise KeyFileCorruptError(f"{path} is not a {kind} file")
    version = doc.get("version")
    if not _is_int(version) or version != _FILE_VERSION:
        raise KeyFileCorruptError(f"{path} has an unsupported version")


def _b64field(doc: dict[str, Any], field: str, path: Path, length: int) -> bytes:
    value = doc.get(field)
    if not isinstance(value, str):
        raise KeyFileCorruptError(f"{path}: field {field!r} is missing or not a string")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise KeyFileCorruptError(f"{path}: field {field!r} is not valid base64") from None
    if len(data) != length:
        raise KeyFileCorruptError(f"{path}: field {field!r} has the wrong length")
    return data


def _ensure_private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


def _write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, as a file only its owner can read (0600)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
