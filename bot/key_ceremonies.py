"""Key ceremonies: creating, sharing, removing and rotating keys, with the store kept in step.

The crypto facade (`bot.crypto`) does every cryptographic step; this module decides the order
of the steps against the key files and the database, and writes each one to the audit trail
(who, what, which key fingerprint; never a passphrase or a secret).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bot import crypto
from bot.crypto import BotCrypto, StaffKey, StaffPublicKey
from bot.errors import ConfigError, CryptoError, KeysMissingError, SafeguardError, TamperedError
from bot.storage.lock import data_dir_lock
from bot.storage.sqlite import SqliteStore

log = logging.getLogger(__name__)

# The audit trail's actor for operations run at the server's command line by whoever holds it.
OPERATOR = "operator"


@dataclass(frozen=True)
class StaffKeyInfo:
    name: str
    fingerprint: str
    created_at: str
    records: int  # wrapped data keys this member holds
    private_key_here: bool


@asynccontextmanager
async def admin_store(data_dir: Path) -> AsyncIterator[SqliteStore]:
    """The store, signing the audit trail with the bot's secrets (refused if they are not
    the ones this database was used with)."""
    bot_crypto = BotCrypto.load(data_dir)
    async with SqliteStore(data_dir, secrets=bot_crypto) as store:
        yield store


async def init_keys(data_dir: Path, name: str, passphrase: str, **kdf: int) -> StaffPublicKey:
    """The bot's secrets and the first staff member's key."""
    public = crypto.create_keys(data_dir, name, passphrase, **kdf)
    async with admin_store(data_dir) as store, store.transaction() as tx:
        await tx.audit(OPERATOR, "keys_created", detail=_key_detail(public))
    log.info("keys_created")
    return public


async def add_staff(
    data_dir: Path, name: str, passphrase: str, by: StaffKey | None = None, **kdf: int
) -> tuple[StaffPublicKey, int]:
    """A newcomer's key: new records are sealed to them at once. With `by` (an existing
    member's unlocked key), every record `by` can open is shared with them too. Returns the
    key and how many records were shared."""
    public = crypto.add_staff_key(data_dir, name, passphrase, **kdf)
    async with admin_store(data_dir) as store, store.transaction() as tx:
        await tx.audit(OPERATOR, "staff_key_added", detail=_key_detail(public))
    log.info("staff_key_added")
    shared = await share_records(data_dir, by, public.name) if by is not None else 0
    return public, shared


async def share_records(data_dir: Path, by: StaffKey, name: str) -> int:
    """Seal every data key `by` holds to `name` as well; returns how many."""
    public = _staff_named(data_dir, name)
    if public is None:
        raise ConfigError(f"no staff key named {name!r}")
    shared = 0
    async with admin_store(data_dir) as store, store.transaction() as tx:
        for key_id, ref, wrapped in await tx.wrapped_keys_of(by.fingerprint):
            rewrapped = by.share_data_key(ref, key_id, wrapped, public)
            await tx.add_wrapped_key(key_id, ref, public.fingerprint, rewrapped)
            shared += 1
        await tx.audit(by.name, "records_shared", detail=f"{public.name} ({shared} records)")
    log.info("records_shared count=%d", shared)
    return shared


async def remove_staff(data_dir: Path, name: str, *, force: bool = False) -> StaffPublicKey:
    """A leaver: their key files and every data key sealed to them are deleted. Nothing is
    re-encrypted. Refuses if some record could then be opened by nobody, unless `force`."""
    async with admin_store(data_dir) as store:
        target = _staff_named(data_dir, name)
        if target is None:
            # Not found by name: the key file lookup is looser ("Priya-Shah" finds Priya
            # Shah's file), and must not skip the check below.
            raise KeysMissingError(f"no staff key named {name!r}")
        if not force:
            async with store.transaction() as tx:
                orphans = await tx.readable_only_by(target.fingerprint)
            if orphans:
                raise ConfigError(
                    f"{orphans} records can be opened only with {target.name}'s key; share them "
                    f"first (`safeguard keys add-staff NEW --by {target.name}`), or use --force "
                    "to make them unreadable for good"
                )
        # Key file first: the running bot stops sealing to it with its next record.
        public = crypto.remove_staff_key(data_dir, name)
        current = [k.fingerprint for k in crypto.staff_public_keys(data_dir)]
        async with store.transaction() as tx:
            removed = await tx.forget_recipient(public.fingerprint)
            # Also copies left by an earlier removal that failed half-way.
            removed += await tx.forget_recipients_except(current)
            await tx.audit(
                OPERATOR, "staff_key_removed", detail=f"{_key_detail(public)} ({removed} keys)"
            )
    log.info("staff_key_removed")
    return public


async def rotate_staff_key(
    data_dir: Path, old: StaffKey, passphrase: str, **kdf: int
) -> tuple[StaffPublicKey, int]:
    """A new key pair for the holder of `old`; everything it could open moves to the new key
    (the data keys are sealed again, the records are not touched), then the old is forgotten.

    Order matters: every copy is checked to open before anything changes; the old private
    key file is kept until the store has moved to the new key, so no failure in between can
    leave records that no file opens."""
    async with admin_store(data_dir) as store:
        async with store.transaction() as tx:
            held = await tx.wrapped_keys_of(old.fingerprint)
        damaged = 0
        for key_id, ref, wrapped in held:
            try:
                old.check_data_key(ref, key_id, wrapped)
            except TamperedError:
                damaged += 1
        if damaged:
            raise CryptoError(
                f"{damaged} of {old.name}'s {len(held)} data keys do not open (damaged); "
                "nothing was changed"
            )
        public = crypto.replace_staff_key(data_dir, old, passphrase, **kdf)
        try:
            async with store.transaction() as tx:
                moved = 0
                # Read again: the running bot may have sealed more to the old key meanwhile.
                for key_id, ref, wrapped in await tx.wrapped_keys_of(old.fingerprint):
                    rewrapped = old.share_data_key(ref, key_id, wrapped, public)
                    await tx.add_wrapped_key(key_id, ref, public.fingerprint, rewrapped)
                    moved += 1
                await tx.forget_recipient(old.fingerprint)
                await tx.audit(
                    old.name,
                    "staff_key_rotated",
                    detail=f"{old.fingerprint} -> {public.fingerprint} ({moved} records)",
                )
        except SafeguardError:
            raise CryptoError(
                f"the new key for {old.name} is in place but the store could not move to it; "
                f"the old private key is kept as {old.name}'s .key.json.retired file: rename "
                "it back over the new one and run the rotation again"
            ) from None
    crypto.forget_retired_staff_key(data_dir, old.name)
    log.info("staff_key_rotated records=%d", moved)
    return public, moved


async def rotate_bot_secrets(data_dir: Path) -> tuple[int, int]:
    """New peppers and keys for the bot; everything sealed under the old keys (drafts,
    reply handles, text in transit) is sealed again, then the old keys are forgotten. The bot
    must be stopped. Returns the new generation and how many items were sealed again."""
    with data_dir_lock(data_dir, "rotating the bot's secrets"):
        # Only the secrets this database was used with are rotated (refused otherwise).
        async with admin_store(data_dir):
            pass
        generation = crypto.rotate_bot_secrets(data_dir)
        bot_crypto = BotCrypto.load(data_dir)
        resealed = 0
        # Opening records the new generation's check values.
        async with admin_store(data_dir) as store:
            async with store.transaction() as tx:
                for table, column, rowid, kind, owner, blob in await tx.short_lived_sealed():
                    new = bot_crypto.reseal(*_reseal_args(kind, owner), blob)
                    if new is not None:
                        await tx.replace_sealed(table, column, rowid, new)
                        resealed += 1
                await tx.audit(OPERATOR, "bot_secrets_rotated", detail=f"generation {generation}")
            # Only once everything is sealed under the new keys are the old ones dropped.
            crypto.forget_retired_secrets(data_dir)
    log.info("bot_secrets_rotated generation=%d resealed=%d", generation, resealed)
    return generation, resealed


async def list_staff_keys(data_dir: Path) -> list[StaffKeyInfo]:
    holders = set(StaffKey.names(data_dir))
    async with SqliteStore(data_dir) as store:
        counts = await store.recipients_in_use()
    return [
        StaffKeyInfo(
            k.name, k.fingerprint, k.created_at, counts.get(k.fingerprint, 0), k.name in holders
        )
        for k in crypto.staff_public_keys(data_dir)
    ]


def _staff_named(data_dir: Path, name: str) -> StaffPublicKey | None:
    """The current staff key of exactly that name (any case), or None."""
    return next(
        (k for k in crypto.staff_public_keys(data_dir) if k.name.casefold() == name.casefold()),
        None,
    )


def _reseal_args(kind: str, owner: str) -> tuple[str, str]:
    from bot.escalation.paging import followup_context, reply_context, trigger_context

    match kind:
        case "draft":
            return "draft", owner
        case "reply_handle":
            return "reply_handle", owner
        case "trigger":
            return "transit", trigger_context(owner)
        case "followup":
            return "transit", followup_context(owner)
        case "reply":
            return "transit", reply_context(owner)
    raise ValueError(kind)


def _key_detail(public: StaffPublicKey) -> str:
    return f"{public.name} {public.fingerprint}"
