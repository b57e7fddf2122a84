"""One exception tree for the whole product.

    SafeguardError
    ├── ConfigError                 settings or a data file (flows, wording, rules) is wrong
    ├── CryptoError
    │   ├── KeysMissingError        `safeguard keys init` has not been run for this data dir
    │   ├── KeysExistError          refusing to overwrite existing keys
    │   ├── KeyFileCorruptError     a key or secrets file is unreadable (never fall back
    │   │                           to plaintext), or is not the one the database was
    │   │                           used with
    │   ├── WrongPassphraseError    the staff passphrase does not unlock the private key
    │   ├── NotReadableError        a record was not sealed to this staff member's key
    │   └── TamperedError           a sealed record failed authentication
    ├── StorageError
    │   ├── StorageBusyError        the database stayed locked past the retry budget
    │   └── BotRunningError         the bot is running on this data dir; stop it first
    └── NotFoundError               no such case / reference code

Callers catch the narrowest class they can handle; the CLI turns any SafeguardError into a
one-line message and a non-zero exit status, never a traceback with data in it.
"""


class SafeguardError(Exception):
    """Base class of every error this product raises on purpose."""


class ConfigError(SafeguardError):
    pass


class CryptoError(SafeguardError):
    pass


class KeysMissingError(CryptoError):
    pass


class KeysExistError(CryptoError):
    pass


class KeyFileCorruptError(CryptoError):
    pass


class WrongPassphraseError(CryptoError):
    pass


class NotReadableError(CryptoError):
    pass


class TamperedError(CryptoError):
    pass


class StorageError(SafeguardError):
    pass


class StorageBusyError(StorageError):
    pass


class BotRunningError(StorageError):
    pass


class NotFoundError(SafeguardError):
    pass
