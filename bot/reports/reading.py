"""Opening a case's sealed records with one staff member's key (CLI, staff chat, exports)."""

from __future__ import annotations

from bot.crypto import StaffKey, record_key_id
from bot.storage.sqlite import SqliteStore


class CaseReader:
    """Opens the sealed records of cases with `key`, fetching its wrapped data keys."""

    def __init__(self, store: SqliteStore, key: StaffKey) -> None:
        self.store = store
        self.key = key
        self._wrapped: dict[str, dict[bytes, bytes]] = {}

    async def open(self, ref: str, sealed: bytes) -> bytes:
        """Plaintext of one sealed record of case `ref`. NotReadableError if it was not sealed
        to this key, TamperedError if altered."""
        wrapped = self._wrapped.get(ref)
        if wrapped is None:
            wrapped = await self.store.wrapped_keys(ref, self.key.fingerprint)
            self._wrapped[ref] = wrapped
        return self.key.open_report(ref, sealed, wrapped.get(record_key_id(sealed)))
