"""On-call queue under load: how fast N concurrent reporters' urgent messages page someone,
and whether every alert reaches the staff chat exactly once when Telegram throttles and fails.

Starts the real `python -m bot run` against the local Bot API emulator (127.0.0.1 only) with a
rota (Asha, user 5001, on call all week). N reporters press /start and choose an audience, then
send an immediate-danger message. Three runs: all at once (burst); spread evenly over `--spread`
seconds (by default 150: with 100 reporters, one urgent message every 1.5 s); all at once with
faults. Each case is found by the reference code in its reporter's signposting reply. Latency:
the emulator queueing the urgent update -> the bot's first sendMessage with that reference to
the staff chat or the on-call DM (target p99 <= 100 ms); each reporter's own reply (the 999
line) is timed from the same moment. The faults run makes the first `--fail-429` staff-chat
sends answer 429 (retry_after 1) and the next `--fail-500` answer 500, then counts cases
delivered to the staff chat, duplicates (a reference in more than one successful staff-chat
sendMessage; ack timeouts are an hour, so no legitimate re-page happens) and the time until
the last case was delivered.

    .venv/bin/python benchmarks/escalation_bench.py               # all three runs, 100 reporters
    .venv/bin/python benchmarks/escalation_bench.py --spread 5    # 20 urgent messages a second
    .venv/bin/python benchmarks/escalation_bench.py --faults --reporters 20

Exit status 0 whatever the figures are; non-zero only if the harness itself fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from argparse import ArgumentParser, Namespace
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.crypto import create_keys  # noqa: E402
from bot.reports.reference import PATTERN  # noqa: E402
from tests.conftest import FAST_KDF  # noqa: E402
from tests.e2e.conftest import STAFF_CHAT_ID, STAFF_MEMBER_ID, BotProcess  # noqa: E402
from tests.e2e.test_reporting import AUDIENCE_LABELS  # noqa: E402
from tests.emulator import BotApiEmulator, RecordedRequest, SimUser, message_text  # noqa: E402

REF = re.compile(PATTERN.pattern.strip("^$"))
PHRASES = (
    "he's outside my house right now and won't go away",
    "he has a knife and hes in the house now",
    "he's at my door right now and won't leave",
    "help hes outside my house right now",
)
AUDIENCES = list(AUDIENCE_LABELS.values())
SETUP_WAIT = 120.0  # answering 100 /starts at once takes seconds under Telegram's limits
ALWAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
SHIFTS = [{"days": ALWAYS, "start": "00:00", "end": "00:00", "primary": "Asha"}]
BOT_ENV = {
    "SAFEGUARD_LOGGING__LEVEL": "WARNING",
    "SAFEGUARD_ROTA__PEOPLE": json.dumps({"Asha": STAFF_MEMBER_ID}),
    "SAFEGUARD_ROTA__SHIFTS": json.dumps(SHIFTS),
    # No legitimate re-page during a run: any repeat in the staff chat is a duplicate.
    "SAFEGUARD_ESCALATION__IMMEDIATE__ACK_TIMEOUT_SECONDS": "3600",
    "SAFEGUARD_ESCALATION__IMMEDIATE__EVERYONE_AFTER_SECONDS": "7200",
    "SAFEGUARD_ESCALATION__IMMEDIATE__REPEAT_EVERY_SECONDS": "7200",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class TimedEmulator(BotApiEmulator):
    """The emulator, remembering when each update became available to the bot."""

    def __init__(self) -> None:
        super().__init__()
        self.enqueued_at: dict[int, float] = {}

    def enqueue_update(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        update = super().enqueue_update(kind, payload)
        self.enqueued_at[int(update["update_id"])] = time.time()
        return update

    def queued_at(self, message: dict[str, Any]) -> float:
        """When the update carrying a message a user sent became available to the bot."""
        return next(
            t for i, t in self.enqueued_at.items() if self.updates[i].get("message") == message
        )


@dataclass
class Result:
    cells: list[str]  # one row of the table, in COLUMNS order
    note: str
    log_problems: list[str]


COLUMNS = ["run", "cases", "p50 ms", "p99 ms", "max ms", "delivered", "dups", "last s"]
COLUMNS += ["staff sends (failed)", "DMs", "DM cases", "999 line p50/p99 ms"]


def sends_to(requests: list[RecordedRequest], chat_id: int) -> list[RecordedRequest]:
    """sendMessage calls to one chat (edits are another method), oldest first."""
    wanted = ("sendMessage", str(chat_id))
    return [r for r in requests if (r.method, str(r.params.get("chat_id"))) == wanted]


def carrying(ref: str, requests: list[RecordedRequest]) -> list[RecordedRequest]:
    return [r for r in requests if ref in str(r.params.get("text"))]


def reached(requests: list[RecordedRequest], chat_id: int, refs: list[str]) -> set[str]:
    """The references in at least one successful sendMessage to the chat."""
    text = " ".join(str(r.params.get("text")) for r in sends_to(requests, chat_id) if r.ok)
    return {ref for ref in refs if ref in text}


async def choose_audience(user: SimUser, label: str) -> None:
    await user.send_text("/start")
    await user.wait_for_bot_message(contains="Who is this about?", timeout=SETUP_WAIT)
    await user.press(label)
    await user.wait_for_bot_message(timeout=SETUP_WAIT)  # the first question


async def reference_of(user: SimUser, after: int, wait_s: float) -> str | None:
    try:
        reply = await user.wait_for_bot_message("Your reference is", after=after, timeout=wait_s)
    except AssertionError:
        return None
    found = REF.search(message_text(reply))
    return found.group(0) if found else None


Cases = list[tuple[float, SimUser, int]]  # when the urgent message was queued, by whom, its id


async def burst(
    emulator: TimedEmulator, n: int, faults: tuple[int, int], spread: float = 0.0
) -> tuple[int, Cases]:
    """N reporters choose an audience, then send a danger phrase: all at once, or (`spread`)
    at evenly spaced moments over that many seconds. Returns the index of the first request
    made after the burst began, and the urgent messages."""
    on_call = emulator.user(STAFF_MEMBER_ID)
    await on_call.send_text("/start")  # a private chat with the bot, so the DM is not refused
    await on_call.wait_for_bot_message(contains="Who is this about?", timeout=SETUP_WAIT)
    users = [emulator.user(10_000 + i, "R") for i in range(n)]
    labels = [AUDIENCES[i % len(AUDIENCES)] for i in range(n)]
    await asyncio.gather(*(choose_audience(u, a) for u, a in zip(users, labels, strict=True)))
    await asyncio.sleep(1.0)  # let the bot go idle
    for status, count in zip((429, 500), faults, strict=True):
        if count:  # the 429s first, then the 500s: faults are used up in order
            emulator.fail_next("sendMessage", status, count, 1, chat_id=STAFF_CHAT_ID)
    since = len(emulator.requests)

    async def say(i: int, user: SimUser) -> dict[str, Any]:
        await asyncio.sleep(spread * i / n)
        return await user.send_text(PHRASES[i % len(PHRASES)])

    if spread:
        sent = list(await asyncio.gather(*(say(i, u) for i, u in enumerate(users))))
    else:
        sent = [await u.send_text(PHRASES[i % len(PHRASES)]) for i, u in enumerate(users)]
    pairs = zip(users, sent, strict=True)
    return since, [(emulator.queued_at(s), u, s["message_id"]) for u, s in pairs]


async def one_run(
    name: str, n: int, faults: tuple[int, int], args: Namespace, spread: float = 0.0
) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        create_keys(data_dir, "bench", "bench", **FAST_KDF)
        emulator = TimedEmulator()
        async with emulator:
            staff = emulator.group(STAFF_CHAT_ID, "staff")
            await emulator.add_bot_to_group(staff, emulator.user(STAFF_MEMBER_ID, "Asha"))
            bot = BotProcess(emulator, data_dir, Path(tmp))
            bot.env_overrides.update(BOT_ENV)
            await bot.start()
            try:
                since, cases = await burst(emulator, n, faults, spread)
                found = [reference_of(u, m, args.timeout) for _, u, m in cases]
                starts, refs = [t for t, _, _ in cases], await asyncio.gather(*found)
                known = [r for r in refs if r is not None]

                def everywhere() -> bool:
                    done = emulator.requests[since:]
                    chats = (STAFF_CHAT_ID, STAFF_MEMBER_ID)
                    return all(len(reached(done, c, known)) == len(known) for c in chats)

                with contextlib.suppress(AssertionError):  # reported as delivered X/N
                    await emulator.wait_for(everywhere, args.timeout)
                await asyncio.sleep(args.settle)  # late repeats would show up as duplicates
            finally:
                code = await bot.stop()
        requests = emulator.requests[since:]
        staff_reqs = sends_to(requests, STAFF_CHAT_ID)
        dm_reqs = sends_to(requests, STAFF_MEMBER_ID)
        paging = sorted(staff_reqs + dm_reqs, key=lambda r: r.time)
        staff_ok = [r for r in staff_reqs if r.ok]
        latencies: list[float] = []
        first_ok: list[float] = []
        copies = 0
        for start, ref in zip(starts, refs, strict=True):
            if ref is None:
                continue
            latencies.extend((r.time - start) * 1000 for r in carrying(ref, paging)[:1])
            ok = carrying(ref, staff_ok)
            first_ok.extend(r.time for r in ok[:1])
            copies += max(0, len(ok) - 1)
        # The reporter's own reply (the 999 line, with the reference), from the same moment.
        lines: list[float] = []
        for (start, user, _), ref in zip(cases, refs, strict=True):
            if ref is not None:
                to_them = carrying(ref, sends_to(requests, user.id))
                lines.extend((r.time - start) * 1000 for r in to_them[:1])
        line_ms = lines or [float("nan")]
        lat = latencies or [float("nan")]
        figures = [statistics.median(lat), percentile(lat, 0.99), max(lat)]
        last = f"{max(first_ok) - min(starts):.2f}" if first_ok else "-"
        problems = [
            line
            for line in bot.log().splitlines()
            if any(word in line for word in (" ERROR ", " CRITICAL ", "Traceback"))
        ] + ([f"bot exited with status {code}"] if code else [])
        met = "met" if latencies and figures[1] <= 100 else "MISSED"
        immediate = sum(str(r.params.get("text")).count("IMMEDIATE") for r in staff_ok)
        return Result(
            [
                *(name, f"{len(known)}/{n}", *(f"{v:.1f}" for v in figures)),
                *(f"{len(first_ok)}/{len(known)}", str(copies), last),
                *(f"{len(staff_reqs)} ({len(staff_reqs) - len(staff_ok)})", str(len(dm_reqs))),
                f"{len(reached(requests, STAFF_MEMBER_ID, known))}/{len(known)}",
                f"{statistics.median(line_ms):.0f}/{percentile(line_ms, 0.99):.0f}",
            ],
            f"[{name}] p99 <= 100 ms target {met}; paged {len(latencies)}/{len(known)}; "
            f"IMMEDIATE case blocks in staff chat {immediate}; API violations "
            f"{len(emulator.violations)}; bot log errors {len(problems)}",
            problems,
        )


def report(results: list[Result]) -> None:
    rows = [COLUMNS, *(r.cells for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for n, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in pairs))
        if n == 0:
            print("-" * (sum(widths) + 2 * len(widths) - 2))
    print()
    print("p50/p99/max: urgent update queued -> first staff-chat/on-call DM request with its ref;")
    print("delivered: ref in a successful staff-chat sendMessage; dups: extra such sends per case;")
    print("last s: first urgent update queued -> last case's first successful staff-chat send;")
    print("DMs: sendMessage calls to the on-call person; DM cases: references they received.")
    print("999 line: urgent update queued -> the reporter's reply with their reference.")
    for r in results:
        print(r.note)
        for line in r.log_problems[:5]:
            print(f"    {line[:160]}")


async def main(args: Namespace) -> None:
    runs = [("burst", (0, 0), 0.0), (f"spread {args.spread:g}s", (0, 0), args.spread)]
    runs = runs * (not args.faults) + [("faults", (args.fail_429, args.fail_500), 0.0)]
    results = [await one_run(name, args.reporters, f, args, sp) for name, f, sp in runs]
    print(f"reporters: {args.reporters} at once; faults: {args.fail_429}x429, {args.fail_500}x500")
    report(results)


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reporters", type=int, default=100)
    parser.add_argument("--faults", action="store_true", help="only the run with faults")
    parser.add_argument(
        "--spread", type=float, default=150.0, help="the spread run: urgent messages over S seconds"
    )
    parser.add_argument("--fail-429", type=int, default=10)
    parser.add_argument("--fail-500", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for all")
    parser.add_argument("--settle", type=float, default=3.0, help="then wait for late repeats")
    asyncio.run(main(parser.parse_args()))
