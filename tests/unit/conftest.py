"""Fixtures for the reporting service over a real store and real keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.dialogue.content import Content
from bot.storage.sqlite import SqliteStore
from nlu.pipeline import Nlu, build_nlu
from tests.conftest import ROOT, signed_store


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
