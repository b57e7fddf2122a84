"""Shared fixtures. No test may reach the internet: a guard refuses any non-loopback connect."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import EscalationSettings, LevelPolicy
from bot.crypto import BotCrypto, StaffKey, create_keys
from bot.escalation.paging import Paging
from bot.escalation.rota import Rota, RotaSettings
from bot.reports.reading import CaseReader
from bot.storage.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
TEST_PASSPHRASE = "correct horse battery staple"
TEST_STAFF = "lead"
# Tests use a cheap Argon2id so the suite stays fast; the defaults are tested in test_crypto.
FAST_KDF: dict[str, int] = {"kdf_memory_kib": 8192, "kdf_iterations": 1}


@pytest.fixture(scope="session", autouse=True)
def _nlu_model_trained() -> None:
    """Train the embedded model for the current training data once, before any test.

    A deployment trains it once too (the file name carries the data's hash); without this, the
    first bot process a test starts would train it and could miss its start-up deadline.
    """
    from nlu.pipeline import load_embedded_model

    load_embedded_model()


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if host not in ("127.0.0.1", "::1", "localhost"):
                raise AssertionError(f"test tried to reach the network: {host}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir with staff keys and bot secrets, made with the test passphrase."""
    path = tmp_path / "data"
    create_keys(path, TEST_STAFF, TEST_PASSPHRASE, **FAST_KDF)
    return path


def make_paging(
    crypto: BotCrypto,
    rota: RotaSettings | None = None,
    members: list[int] | None = None,
    **policies: LevelPolicy,
) -> Paging:
    """Paging for tests. Routine reports do not wait for working hours unless a test says so,
    so what the reporter is told does not depend on the time of day the suite runs."""
    routine = LevelPolicy(notify="queue", ack_timeout_seconds=86_400)
    settings = EscalationSettings(**{"routine": routine, **policies})
    return Paging(settings, Rota(rota or RotaSettings()), members or [], crypto)


def signed_store(data_dir: Path, **kwargs: Any) -> SqliteStore:
    """The store as the bot opens it: staff actions signed into the audit trail."""
    return SqliteStore(data_dir, chain=BotCrypto.load(data_dir).chain_audit_entry, **kwargs)


def staff_key(data_dir: Path, name: str = TEST_STAFF) -> StaffKey:
    return StaffKey.unlock(data_dir, name, TEST_PASSPHRASE)


async def open_record(data_dir: Path, store: SqliteStore, ref: str, sealed: bytes) -> bytes:
    """A sealed record opened the way staff open it: their wrapped copy of its data key."""
    return await CaseReader(store, staff_key(data_dir)).open(ref, sealed)
