"""Fixtures for the reporting service, retention and backups over a real store and real keys
(`data_dir` itself, with keys made, is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.crypto import BotCrypto
from bot.dialogue.content import Content
from bot.storage.sqlite import SqliteStore
from nlu.pipeline import Nlu, build_nlu
from tests.conftest import ROOT, signed_store


@pytest.fixture
def crypto(data_dir: Path) -> BotCrypto:
    """What the running bot holds for `data_dir`: it seals, and signs the audit trail."""
    return BotCrypto.load(data_dir)


@pytest.fixture
async def store(data_dir: Path) -> AsyncIterator[SqliteStore]:
    async with signed_store(data_dir, busy_timeout_ms=200) as s:
        yield s


@pytest.fixture
def content() -> Content:
    return Content.load(ROOT / "config", "en")


@pytest.fixture(scope="module")
def nlu() -> Nlu:
    return build_nlu()
