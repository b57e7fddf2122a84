"""End-to-end harness: the real `safeguard run` process against the local Bot API emulator."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.emulator import BotApiEmulator, SimGroup, SimUser

STAFF_CHAT_ID = -1001000000001
STAFF_MEMBER_ID = 5001


class BotProcess:
    """Starts, stops and kills `python -m bot run`, logging to a file the tests can inspect."""

    def __init__(self, emulator: BotApiEmulator, data_dir: Path, workdir: Path) -> None:
        self.emulator = emulator
        self.data_dir = data_dir
        self.workdir = workdir
        self.log_path = workdir / "bot.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.env_overrides: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
        env.update(
            {
                "SAFEGUARD_TELEGRAM__TOKEN": self.emulator.token,
                "SAFEGUARD_TELEGRAM__API_BASE": self.emulator.base_url,
                "SAFEGUARD_TELEGRAM__POLLING_TIMEOUT_SECONDS": "1",
                "SAFEGUARD_STAFF__CHAT_ID": str(STAFF_CHAT_ID),
                "SAFEGUARD_STAFF__MEMBERS": f"[{STAFF_MEMBER_ID}]",
                "SAFEGUARD_STORAGE__DATA_DIR": str(self.data_dir),
                "SAFEGUARD_LOGGING__LEVEL": "DEBUG",
                # Tests answer the bot at once; Telegram's pace of one message a second per
                # reporter (tests/unit/test_limits.py, benchmarks/load.py) would only slow them.
                "SAFEGUARD_TELEGRAM__PACE_PRIVATE_CHATS": "false",
            }
        )
        env.update(self.env_overrides)
        return env

    async def start(self) -> None:
        since = len(self.emulator.requests)
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=self.workdir,
            env=self.env(),
            stdout=log,
            stderr=log,
        )
        log.close()
        try:
            await self.emulator.wait_for_request("getUpdates", since=since, timeout=20)
        except AssertionError:
            await self.kill()  # not left running for the rest of the session
            raise AssertionError(f"bot did not start polling; log:\n{self.log()}") from None

    async def stop(self) -> int:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()

    async def kill(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
async def emulator() -> AsyncIterator[BotApiEmulator]:
    async with BotApiEmulator() as emu:
        yield emu
        emu.assert_no_violations()


@pytest.fixture
async def staff_chat(emulator: BotApiEmulator) -> SimGroup:
    group = emulator.group(STAFF_CHAT_ID, "Safeguarding on-call")
    await emulator.add_bot_to_group(group, emulator.user(STAFF_MEMBER_ID, "Sam"))
    return group


@pytest.fixture
def staff_member(emulator: BotApiEmulator) -> SimUser:
    return emulator.user(STAFF_MEMBER_ID, "Sam")


@pytest.fixture
async def bot(
    emulator: BotApiEmulator, staff_chat: SimGroup, data_dir: Path, tmp_path: Path
) -> AsyncIterator[BotProcess]:
    process = BotProcess(emulator, data_dir, tmp_path)
    await process.start()
    yield process
    code = await process.stop()
    assert code == 0, f"bot exited with {code}; log:\n{process.log()}"
    assert "Traceback" not in process.log(), process.log()
