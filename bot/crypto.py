"""The product's one cryptographic facade.

No other module touches a cryptographic primitive: they call the functions and methods here,
whose names say what they do. Only pyca/cryptography is used.

Who holds what
--------------
* The running bot (:class:`BotCrypto`) holds the staff PUBLIC key and its own secrets (a
  reporter pepper, a draft key and a reply-handle key). It can seal reports but never open them.
* A staff member's process (:class:`StaffKey`) unlocks the staff PRIVATE key with a passphrase
  and opens sealed reports.

Files under ``<data_dir>/keys/`` (directory mode 0700, files mode 0600, written atomically)
------------------------------------------------------------------------------------------
``staff_public.json``
    ``{"kind": "safeguard-staff-public", "version": 1, "suite": SUITE_NAME,
    "public_key": b64(ML-KEM-768 public (1184 B) || X25519 public (32 B)),
    "fingerprint": "ab12 cd34 ef56 7890"}``
``staff_private.json``
    ``{"kind": "safeguard-staff-private", "version": 1, "suite": SUITE_NAME,
    "fingerprint": ..., "cipher": "AES-256-GCM",
    "kdf": {"name": "argon2id", "memory_kib": ..., "iterations": ..., "lanes": 4,
    "salt": b64(16 B)}, "nonce": b64(12 B), "ciphertext": b64(...)}``.
    The plaintext is ML-KEM-768 seed (64 B) || X25519 private (32 B); the AES-256-GCM key is
    Argon2id(passphrase); the AAD is the canonical JSON of every field except ``nonce`` and
    ``ciphertext``, so an edited parameter or fingerprint makes the file fail to open.
``bot_secrets.json``
    ``{"kind": "safeguard-bot-secrets", "version": 1, "reporter_pepper": b64(32 B),
    "draft_key": b64(32 B), "reply_handle_key": b64(32 B)}``

Sealed blob formats (the first byte is a format version)
-------------------------------------------------------
* report: ``0x01 || HPKE(MLKEM768-X25519, HKDF-SHA256, AES-256-GCM)`` single-shot ciphertext
  (encapsulated key || ciphertext) with ``info = b"safeguard/report/v1|" + reference``.
  Version 0x02 is reserved for a multi-recipient format (a data key wrapped to several keys).
* draft: ``0x01 || nonce (12 B) || AES-256-GCM`` with AAD ``b"safeguard/draft/v1|" + pseudonym``.
* reply handle: ``0x01 || nonce (12 B) || AES-256-GCM(int64 big-endian chat id)`` with AAD
  ``b"safeguard/reply-handle/v1|" + reference``.

No secret value, passphrase or plaintext ever appears in an exception message or a repr, and
this module does not log.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import secrets
import unicodedata
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
    TamperedError,
    WrongPassphraseError,
)

__all__ = [
    "SUITE_NAME",
    "BotCrypto",
    "StaffKey",
    "create_keys",
    "keys_exist",
]

SUITE_NAME: Final = "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"

KEYS_DIRNAME: Final = "keys"
STAFF_PUBLIC_FILE: Final = "staff_public.json"
STAFF_PRIVATE_FILE: Final = "staff_private.json"
BOT_SECRETS_FILE: Final = "bot_secrets.json"
_KEY_FILES: Final = (STAFF_PUBLIC_FILE, STAFF_PRIVATE_FILE, BOT_SECRETS_FILE)

_FILE_VERSION: Final = 1
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
_NONCE_LEN: Final = 12
_TAG_LEN: Final = 16
_MAX_KEY_FILE_BYTES: Final = 64 * 1024

_FORMAT_V1: Final = 1
_REPORT_INFO_PREFIX: Final = b"safeguard/report/v1|"
_DRAFT_AAD_PREFIX: Final = b"safeguard/draft/v1|"
_REPLY_HANDLE_AAD_PREFIX: Final = b"safeguard/reply-handle/v1|"
_TRANSIT_AAD_PREFIX: Final = b"safeguard/transit/v1|"
_PSEUDONYM_PREFIX: Final = b"reporter:"

_SUITE: Final = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def keys_exist(data_dir: Path) -> bool:
    """Return True if ANY key file exists under ``<data_dir>/keys/``.

    This is the same test :func:`create_keys` uses to refuse overwriting: a partial set still
    counts as existing (and :meth:`BotCrypto.load` then reports what is missing).
    """
    keys_dir = _keys_dir(data_dir)
    return any((keys_dir / name).exists() for name in _KEY_FILES)


def create_keys(
    data_dir: Path,
    passphrase: str,
    *,
    kdf_memory_kib: int = DEFAULT_KDF_MEMORY_KIB,
    kdf_iterations: int = DEFAULT_KDF_ITERATIONS,
) -> str:
    """Create the staff key pair and the bot's secrets; return the staff key fingerprint.

    The private key is stored encrypted under ``passphrase``. Raises :class:`KeysExistError`
    if any key file already exists and :class:`ConfigError` for an empty passphrase or KDF
    parameters out of range.
    """
    if not passphrase:
        raise ConfigError("the staff passphrase must not be empty")
    _check_kdf_params(kdf_memory_kib, kdf_iterations, _KDF_LANES, error=ConfigError)

    keys_dir = _keys_dir(data_dir)
    if keys_exist(data_dir):
        raise KeysExistError(f"keys already exist in {keys_dir}; refusing to overwrite them")
    try:
        _ensure_private_dir(keys_dir)
    except OSError:
        raise CryptoError(f"could not create the keys directory {keys_dir}") from None

    # Staff key pair.
    mlkem_private = mlkem.MLKEM768PrivateKey.generate()
    x25519_private = x25519.X25519PrivateKey.generate()
    public_bytes = (
        mlkem_private.public_key().public_bytes_raw()
        + x25519_private.public_key().public_bytes_raw()
    )
    private_bytes = mlkem_private.private_bytes_raw() + x25519_private.private_bytes_raw()
    fingerprint = _fingerprint(public_bytes)

    # Private key, encrypted under the passphrase.
    salt = os.urandom(_KDF_SALT_LEN)
    header: dict[str, Any] = {
        "kind": _KIND_PRIVATE,
        "version": _FILE_VERSION,
        "suite": SUITE_NAME,
        "fingerprint": fingerprint,
        "cipher": _CIPHER_NAME,
        "kdf": {
            "name": _KDF_NAME,
            "memory_kib": kdf_memory_kib,
            "iterations": kdf_iterations,
            "lanes": _KDF_LANES,
            "salt": _b64encode(salt),
        },
    }
    wrapping_key = _derive_wrapping_key(
        passphrase, salt, kdf_memory_kib, kdf_iterations, _KDF_LANES
    )
    nonce = os.urandom(_NONCE_LEN)
    wrapped = AESGCM(wrapping_key).encrypt(nonce, private_bytes, _canonical_json(header))
    private_doc = {**header, "nonce": _b64encode(nonce), "ciphertext": _b64encode(wrapped)}

    # Bot secrets: three independent random values.
    pepper, draft_key, reply_key = (os.urandom(_SECRET_LEN) for _ in range(3))
    if len({pepper, draft_key, reply_key}) != 3:  # pragma: no cover - astronomically unlikely
        raise CryptoError("the random number generator returned repeated values")
    secrets_doc = {
        "kind": _KIND_SECRETS,
        "version": _FILE_VERSION,
        "reporter_pepper": _b64encode(pepper),
        "draft_key": _b64encode(draft_key),
        "reply_handle_key": _b64encode(reply_key),
    }

    public_doc = {
        "kind": _KIND_PUBLIC,
        "version": _FILE_VERSION,
        "suite": SUITE_NAME,
        "public_key": _b64encode(public_bytes),
        "fingerprint": fingerprint,
    }

    # Private key first, public key last: once the bot can seal, the key that opens exists.
    written: list[Path] = []
    try:
        for name, doc in (
            (STAFF_PRIVATE_FILE, private_doc),
            (BOT_SECRETS_FILE, secrets_doc),
            (STAFF_PUBLIC_FILE, public_doc),
        ):
            path = keys_dir / name
            _write_private_file(path, _pretty_json(doc))
            written.append(path)
    except OSError:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise CryptoError(f"could not write the key files in {keys_dir}") from None
    return fingerprint


# --------------------------------------------------------------------------------------------
# What the running bot holds
# --------------------------------------------------------------------------------------------


class BotCrypto:
    """What the running bot holds: the staff public key and the bot's secrets.

    Never a private key: the bot can seal reports but not open them.
    """

    __slots__ = ("_draft_aead", "_fingerprint", "_pepper", "_reply_aead", "_staff_public")

    def __init__(
        self,
        *,
        staff_public_bytes: bytes,
        reporter_pepper: bytes,
        draft_key: bytes,
        reply_handle_key: bytes,
    ) -> None:
        """Prefer :meth:`load`; this checks its inputs the same way."""
        self._staff_public = _public_key_from_bytes(staff_public_bytes)
        self._fingerprint = _fingerprint(staff_public_bytes)
        for value in (reporter_pepper, draft_key, reply_handle_key):
            if len(value) != _SECRET_LEN:
                raise KeyFileCorruptError("a bot secret has the wrong length")
        if len({reporter_pepper, draft_key, reply_handle_key}) != 3:
            raise KeyFileCorruptError("the bot secrets are not distinct values")
        self._pepper = reporter_pepper
        self._draft_aead = AESGCM(draft_key)
        self._reply_aead = AESGCM(reply_handle_key)

    @classmethod
    def load(cls, data_dir: Path) -> BotCrypto:
        """Load the staff public key and the bot secrets from ``<data_dir>/keys/``.

        Raises :class:`KeysMissingError` if a needed file is absent and
        :class:`KeyFileCorruptError` if one is unreadable or malformed. The staff private key
        file is never read.
        """
        keys_dir = _keys_dir(data_dir)
        public_path = keys_dir / STAFF_PUBLIC_FILE
        secrets_path = keys_dir / BOT_SECRETS_FILE
        public_doc = _read_json(public_path)
        secrets_doc = _read_json(secrets_path)

        _expect_keys(
            public_doc, {"kind", "version", "suite", "public_key", "fingerprint"}, public_path
        )
        _expect_header(public_doc, _KIND_PUBLIC, public_path)
        if public_doc["suite"] != SUITE_NAME:
            raise KeyFileCorruptError(f"{public_path} uses an unsupported suite")
        public_bytes = _b64field(public_doc, "public_key", public_path, _PUBLIC_KEY_LEN)
        if public_doc["fingerprint"] != _fingerprint(public_bytes):
            raise KeyFileCorruptError(f"{public_path}: the fingerprint does not match the key")

        _expect_keys(
            secrets_doc,
            {"kind", "version", "reporter_pepper", "draft_key", "reply_handle_key"},
            secrets_path,
        )
        _expect_header(secrets_doc, _KIND_SECRETS, secrets_path)
        pepper = _b64field(secrets_doc, "reporter_pepper", secrets_path, _SECRET_LEN)
        draft_key = _b64field(secrets_doc, "draft_key", secrets_path, _SECRET_LEN)
        reply_key = _b64field(secrets_doc, "reply_handle_key", secrets_path, _SECRET_LEN)
        if len({pepper, draft_key, reply_key}) != 3:
            raise KeyFileCorruptError(f"{secrets_path}: the secrets are not distinct values")

        return cls(
            staff_public_bytes=public_bytes,
            reporter_pepper=pepper,
            draft_key=draft_key,
            reply_handle_key=reply_key,
        )

    def __repr__(self) -> str:
        return f"BotCrypto(staff_fingerprint={self._fingerprint!r})"

    def __reduce__(self) -> Any:
        raise TypeError("BotCrypto holds secrets and cannot be pickled")

    @property
    def staff_fingerprint(self) -> str:
        """Fingerprint of the staff public key reports are sealed to, e.g. ``ab12 cd34 ...``."""
        return self._fingerprint

    def pseudonym_for(self, telegram_user_id: int) -> str:
        """A stable pseudonym (64 hex chars) for a Telegram user; the id cannot be recovered."""
        mac = crypto_hmac.HMAC(self._pepper, hashes.SHA256())
        mac.update(_PSEUDONYM_PREFIX + str(int(telegram_user_id)).encode("ascii"))
        return mac.finalize().hex()

    def seal_draft(self, pseudonym: str, plaintext: bytes) -> bytes:
        """Encrypt a reporter's unfinished answers, bound to their pseudonym."""
        return _aead_seal(self._draft_aead, plaintext, _DRAFT_AAD_PREFIX + pseudonym.encode())

    def open_draft(self, pseudonym: str, sealed: bytes) -> bytes:
        """Decrypt a draft sealed for ``pseudonym``; :class:`TamperedError` on any failure."""
        return _aead_open(self._draft_aead, sealed, _DRAFT_AAD_PREFIX + pseudonym.encode(), "draft")

    def seal_transit(self, context: str, plaintext: bytes) -> bytes:
        """Encrypt words the bot itself must read again soon, bound to ``context``: an alert's
        trigger until it is acknowledged, a follow-up until it is posted to staff, a staff
        reply the reporter may read again while the case is open. Erased when done."""
        return _aead_seal(self._draft_aead, plaintext, _TRANSIT_AAD_PREFIX + context.encode())

    def open_transit(self, context: str, sealed: bytes) -> bytes:
        """Decrypt what :meth:`seal_transit` sealed for ``context``; :class:`TamperedError`."""
        return _aead_open(
            self._draft_aead, sealed, _TRANSIT_AAD_PREFIX + context.encode(), "transit text"
        )

    def seal_reply_handle(self, reference: str, chat_id: int) -> bytes:
        """Encrypt the Telegram chat id a staff reply for case ``reference`` goes to."""
        try:
            chat_bytes = int(chat_id).to_bytes(8, "big", signed=True)
        except OverflowError:
            raise CryptoError("the chat id does not fit in 64 bits") from None
        return _aead_seal(
            self._reply_aead, chat_bytes, _REPLY_HANDLE_AAD_PREFIX + reference.encode()
        )

    def open_reply_handle(self, reference: str, sealed: bytes) -> int:
        """Decrypt the chat id sealed for case ``reference``; :class:`TamperedError` on failure."""
        chat_bytes = _aead_open(
            self._reply_aead, sealed, _REPLY_HANDLE_AAD_PREFIX + reference.encode(), "reply handle"
        )
        if len(chat_bytes) != 8:
            raise TamperedError("the reply handle has an unexpected length")
        return int.from_bytes(chat_bytes, "big", signed=True)

    def seal_report(self, reference: str, plaintext: bytes) -> bytes:
        """Encrypt report content to the staff public key (HPKE), bound to case ``reference``.

        Only the holder of the staff private key can open it; the bot itself cannot.
        """
        ciphertext = _SUITE.encrypt(plaintext, self._staff_public, info=_report_info(reference))
        return bytes([_FORMAT_V1]) + ciphertext


# --------------------------------------------------------------------------------------------
# What a staff member's process holds
# --------------------------------------------------------------------------------------------


class StaffKey:
    """The unlocked staff private key; exists only in a staff member's process (CLI)."""

    __slots__ = ("_fingerprint", "_private")

    def __init__(self, private_bytes: bytes) -> None:
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
        self._private = hpke.MLKEM768X25519PrivateKey(mlkem_private, x25519_private)
        self._fingerprint = _fingerprint(public_bytes)

    @classmethod
    def unlock(cls, data_dir: Path, passphrase: str) -> StaffKey:
        """Decrypt the staff private key with ``passphrase``.

        Raises :class:`KeysMissingError` if the private key file is absent,
        :class:`KeyFileCorruptError` if it is malformed (or does not match
        ``staff_public.json``), and :class:`WrongPassphraseError` if it does not open — which
        is also what an edited salt, KDF parameter or fingerprint looks like.
        """
        keys_dir = _keys_dir(data_dir)
        path = keys_dir / STAFF_PRIVATE_FILE
        doc = _read_json(path)
        _expect_keys(
            doc,
            {"kind", "version", "suite", "fingerprint", "cipher", "kdf", "nonce", "ciphertext"},
            path,
        )
        _expect_header(doc, _KIND_PRIVATE, path)
        if doc["suite"] != SUITE_NAME or doc["cipher"] != _CIPHER_NAME:
            raise KeyFileCorruptError(f"{path} uses an unsupported suite or cipher")
        if not isinstance(doc["fingerprint"], str):
            raise KeyFileCorruptError(f"{path}: malformed fingerprint")
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
            raise WrongPassphraseError("the passphrase does not unlock the staff private key")
        header = {k: v for k, v in doc.items() if k not in ("nonce", "ciphertext")}
        wrapping_key = _derive_wrapping_key(passphrase, salt, memory_kib, iterations, lanes)
        try:
            private_bytes = AESGCM(wrapping_key).decrypt(nonce, wrapped, _canonical_json(header))
        except InvalidTag:
            raise WrongPassphraseError(
                "the passphrase does not unlock the staff private key"
                " (or the key file has been altered)"
            ) from None

        key = cls(private_bytes)
        if key.fingerprint != doc["fingerprint"]:
            raise KeyFileCorruptError(f"{path}: the fingerprint does not match the key")
        public_path = keys_dir / STAFF_PUBLIC_FILE
        if public_path.exists():
            public_doc = _read_json(public_path)
            if public_doc.get("fingerprint") != key.fingerprint:
                raise KeyFileCorruptError(
                    f"{public_path} does not belong to this private key (fingerprints differ)"
                )
        return key

    def __repr__(self) -> str:
        return f"StaffKey(fingerprint={self._fingerprint!r})"

    def __reduce__(self) -> Any:
        raise TypeError("StaffKey holds a private key and cannot be pickled")

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the matching public key, e.g. ``ab12 cd34 ef56 7890``."""
        return self._fingerprint

    def open_report(self, reference: str, sealed: bytes) -> bytes:
        """Decrypt a report sealed for case ``reference``.

        Raises :class:`TamperedError` if the blob was altered, truncated, is of an unknown
        format, or was sealed for a different case.
        """
        if len(sealed) < 1:
            raise TamperedError("the sealed report is empty")
        if sealed[0] != _FORMAT_V1:
            raise TamperedError(f"the sealed report has an unknown format version ({sealed[0]})")
        try:
            return _SUITE.decrypt(bytes(sealed[1:]), self._private, info=_report_info(reference))
        except (InvalidTag, ValueError):
            raise TamperedError(
                "the sealed report failed authentication (altered, or another case's record)"
            ) from None


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _keys_dir(data_dir: Path) -> Path:
    return Path(data_dir) / KEYS_DIRNAME


def _report_info(reference: str) -> bytes:
    return _REPORT_INFO_PREFIX + reference.encode()


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


def _aead_seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE_LEN)
    return bytes([_FORMAT_V1]) + nonce + aead.encrypt(nonce, plaintext, aad)


def _aead_open(aead: AESGCM, sealed: bytes, aad: bytes, what: str) -> bytes:
    if len(sealed) < 1 + _NONCE_LEN + _TAG_LEN:
        raise TamperedError(f"the sealed {what} is truncated")
    if sealed[0] != _FORMAT_V1:
        raise TamperedError(f"the sealed {what} has an unknown format version ({sealed[0]})")
    nonce = bytes(sealed[1 : 1 + _NONCE_LEN])
    try:
        return aead.decrypt(nonce, bytes(sealed[1 + _NONCE_LEN :]), aad)
    except InvalidTag:
        raise TamperedError(f"the sealed {what} failed authentication") from None


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
