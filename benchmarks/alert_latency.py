"""How fast a danger message reaches the staff chat, end to end.

Starts the real `safeguard run` process against the local Bot API emulator, has N reporters each
send a danger phrase, and measures the time from the update becoming available to the bot's
sendMessage request to the staff chat. Also times an ordinary answer's reply.

    .venv/bin/python benchmarks/alert_latency.py --reporters 50
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.crypto import create_keys  # noqa: E402
from tests.e2e.conftest import STAFF_CHAT_ID, STAFF_MEMBER_ID, BotProcess  # noqa: E402
from tests.emulator import BotApiEmulator, message_text  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(reporters: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        create_keys(data_dir, "bench", kdf_memory_kib=8192, kdf_iterations=1)
        async with BotApiEmulator() as emulator:
            staff = emulator.group(STAFF_CHAT_ID, "staff")
            await emulator.add_bot_to_group(staff, emulator.user(STAFF_MEMBER_ID, "Sam"))
            bot = BotProcess(emulator, data_dir, Path(tmp))
            bot.env_overrides["SAFEGUARD_LOGGING__LEVEL"] = "WARNING"
            await bot.start()
            try:
                reply_ms: list[float] = []
                for i in range(reporters):
                    user = emulator.user(10_000 + i, "R")
                    started = time.perf_counter()
                    await user.send_text("/start")
                    await user.wait_for_bot_message(contains="Who is this about?", timeout=10)
                    reply_ms.append((time.perf_counter() - started) * 1000)

                alert_ms: list[float] = []
                for i in range(reporters):
                    user = emulator.user(10_000 + i, "R")
                    before = len(staff.bot_messages())
                    started = time.perf_counter()
                    await user.send_text("help hes outside my house right now")
                    await emulator.wait_for(
                        lambda b=before: len(staff.bot_messages()) > b, timeout=10
                    )
                    alert_ms.append((time.perf_counter() - started) * 1000)

                burst_users = [emulator.user(20_000 + i, "B") for i in range(reporters)]
                before = len(staff.bot_messages())
                started = time.perf_counter()
                for user in burst_users:
                    await user.send_text("he has a knife and hes in the house now")
                await emulator.wait_for(
                    lambda: len(staff.bot_messages()) >= before + reporters, timeout=60
                )
                burst_ms = (time.perf_counter() - started) * 1000
                alerts = [message_text(m) for m in staff.bot_messages()]
                print(f"reporters: {reporters}")
                print(
                    f"reply to /start (one at a time): p50 {statistics.median(reply_ms):.1f} ms,"
                    f" p99 {percentile(reply_ms, 0.99):.1f} ms"
                )
                print(
                    f"danger message -> staff alert (one at a time): "
                    f"p50 {statistics.median(alert_ms):.1f} ms, "
                    f"p99 {percentile(alert_ms, 0.99):.1f} ms"
                )
                print(
                    f"burst of {reporters} danger messages at once: all alerted in "
                    f"{burst_ms:.0f} ms"
                )
                print(f"alerts posted: {len(alerts)} for {2 * reporters} danger messages")
            finally:
                await bot.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reporters", type=int, default=20)
    asyncio.run(main(parser.parse_args().reporters))
