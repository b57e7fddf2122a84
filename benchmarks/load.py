"""Load generator: N simulated reporters drive the real bot process through whole reports.

Starts `python -m bot run` (a fresh temp data dir with keys; a rota with Asha, user 5001, on
call all week; ack timeouts of an hour, so no legitimate re-page) against the local Bot API
emulator on 127.0.0.1. N reporters (young people, worried adults and professionals in turn)
each press /start, choose their audience and answer every question (buttons and typed words,
some skipped) up to Send, pausing `--think` seconds (uniform in MIN-MAX) before each action.
A share (`--urgent`) types an immediate-danger message in the middle of the report ("he's
outside my house right now and won't go away"), which pages the staff chat and the on-call
person. In duration mode each reporter starts another report until the time is up; with
`--count` the run stops after that many reports.

    .venv/bin/python benchmarks/load.py --reporters 100 --think 0             # capacity
    .venv/bin/python benchmarks/load.py --reporters 100 --think 0.1-0.3 --no-flood-limits
    .venv/bin/python benchmarks/load.py --reporters 100 --think 1-3
    .venv/bin/python benchmarks/load.py --reporters 1000 --mode telegram
    .venv/bin/python benchmarks/load.py --reporters 100 --faults --kill
    .venv/bin/python benchmarks/load.py --reporters 100 --think 0 --profile

Modes: `capacity` (the emulator never throttles) and `telegram` (the emulator enforces 30
messages a second overall, 1 a second per private chat and 20 a minute per group, answering
429 with retry_after). `--faults` injects bursts of 429 and 500 on the staff chat and on
sendMessage to anyone every few seconds; `--kill` also kills the bot with SIGKILL once at a
random moment and starts it again. `--profile` runs the bot under cProfile and lists the top
functions of bot/, aiogram and aiosqlite.

Figures (one table, or `--json` for one JSON object):
- updates/s: reporter updates answered, per second of the load phase (and in its steady part);
- reply latency: the emulator making a reporter's update available -> the bot's first
  successful send/edit/delete request to that chat (a 429'd attempt does not count);
- escalation latency: an urgent update made available -> the first successful sendMessage to
  the staff chat or the on-call DM carrying that case's reference;
- bot CPU seconds per 1,000 updates (/proc/<pid>/stat utime+stime of the bot process, all its
  threads), peak RSS (VmHWM), database bytes per 1,000 reports (sqlite file + WAL);
- 429s the bot received that the emulator's limits caused (injected faults not counted);
- reconciliation with what the generator did and the database holds: reports lost (Send
  pressed and no reference came back, or the reference is not a submitted case) and
  duplicated (a reference's confirmation shown twice; submitted cases nobody was given; the
  confirmation said again, marked "in case my last message didn't reach you", is listed on
  its own);
  escalations lost and duplicated (each urgent message must reach the staff chat exactly once
  and the on-call DM exactly once; a repeat marked "sent again after a restart" is listed on
  its own).

Only counts are printed: no message text, no ids. Exit status 0 whatever the figures are;
non-zero only if the harness itself fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pstats
import random
import re
import resource
import sqlite3
import sys
import tempfile
import time
from argparse import ArgumentParser, ArgumentTypeError, Namespace
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.escalation_bench import BOT_ENV as ESCALATION_BENCH_ENV  # noqa: E402
from bot.crypto import create_keys  # noqa: E402
from bot.reports.reference import PATTERN  # noqa: E402
from bot.storage.sqlite import DB_NAME  # noqa: E402
from tests.conftest import FAST_KDF  # noqa: E402
from tests.e2e.conftest import STAFF_CHAT_ID, STAFF_MEMBER_ID, BotProcess  # noqa: E402
from tests.e2e.test_reporting import AUDIENCE_LABELS  # noqa: E402
from tests.emulator import BotApiEmulator, RecordedRequest, SimUser, TelegramError  # noqa: E402

REF = re.compile(PATTERN.pattern.strip("^$"))
FIRST_REPORTER_ID = 100_000
# One person on call all week, no legitimate re-page during a run (any repeat in the staff
# chat is a duplicate): the escalation benchmark's settings, and the same for "high" alerts.
BOT_ENV = {
    **ESCALATION_BENCH_ENV,
    "SAFEGUARD_ESCALATION__HIGH__ACK_TIMEOUT_SECONDS": "3600",
    "SAFEGUARD_ESCALATION__HIGH__EVERYONE_AFTER_SECONDS": "7200",
    "SAFEGUARD_ESCALATION__HIGH__REPEAT_EVERY_SECONDS": "7200",
}
# With no pause between actions every reporter looks like a flood (bot/dialogue/flood.py): the
# bot would go quiet. Capacity runs (`--think 0`) lift the limits; with a pause they apply.
NO_FLOOD_LIMITS = {
    "SAFEGUARD_FLOOD__BURST": "1000",
    "SAFEGUARD_FLOOD__PER_MINUTE": "6000",
    "SAFEGUARD_FLOOD__REPORTS_PER_DAY": "1000",
}
# Methods that put something in (or take it out of) a chat: a reply to the reporter.
REPLY_PREFIXES = ("send", "edit", "delete", "copy", "forward")
RESENT_MARK = "Sent again after a restart"

# What reporters type. Checked against the embedded NLU: none of these raises an alert on its
# own, so every alert in a run comes from the urgent share (others are counted as unexpected).
URGENT_PHRASES = (
    "he's outside my house right now and won't go away",
    "he has a knife and hes in the house now",
    "he's at my door right now and won't leave",
    "help hes outside my house right now",
)
WHAT = {
    "young_person": (
        "an older lad at the park keeps giving my mate vapes and wants favours",
        "a lad from the year above keeps asking where i live and who i live with",
        "my mate keeps getting lifts from lads who are way older",
    ),
    "worried_adult": (
        "my nephew is being given vapes by older lads near the shops",
        "a girl in my street has bruises and says she fell again",
        "the kids next door are often left on their own till late",
    ),
    "professional": (
        "a man booked a room with a teenage girl who looked scared",
        "a driver picks up two young girls from the school gates every friday",
        "a lad of about 14 keeps coming in with large amounts of cash",
    ),
}
TEXTS = {
    "where": ("near the high street", "the park by the leisure centre", "outside the chip shop"),
    "involved": ("two older boys, one called Jay", "someone on snapchat", "an older lad"),
    "vehicle": ("a silver hatchback", "a white van with a ladder rack"),
    "registration": ("starts with AB12", "no idea sorry"),
    "address": ("the flats on Mill Road", "the takeaway on Queen Street"),
    "time_seen": ("most weekday evenings", "yesterday afternoon"),
    "anything_else": ("she made me promise not to tell", "i'm worried it's getting worse"),
}
# Words in a question -> which step it is (the wording file's questions).
STEP_WORDS = (
    ("What is happening", "what"),
    ("What has happened", "what"),
    ("What did you see", "what"),
    ("Where does it happen", "where"),
    ("Where did it happen", "where"),
    ("Where was it", "address"),
    ("anyone else", "involved"),
    ("Who else", "involved"),
    ("Anyone else", "involved"),
    ("vehicle", "vehicle"),
    ("registration", "registration"),
    ("When did you see it", "time_seen"),
    ("anything else", "anything_else"),
)
NAV = {"⬅️ Back", "Skip", "Start again", "🚪 Leave now"}
SEND, DANGER, REPLY_YES, REPLY_NO = (
    "✅ Send",
    "danger right now",
    "Yes, they can reply",
    "No, don't reply",
)
AUDIENCES = list(AUDIENCE_LABELS)
# The confirmation said again, labelled, when the bot could not tell that the first reached
# the reporter (a kill after sending, a Telegram fault): counted apart from duplicates.
CONFIRMATION_REPEAT = "In case my last message didn't reach you"


# The bot runs under this wrapper (written to the run's temp dir) when asked to: it then runs
# `python -m bot run` as usual. Flags, all harness-side (the bot's code is unchanged):
#   gc-log   log every garbage collection pause over 5 ms to the bot's log (a profile can't)
#   freeze   experiment: import the bot, then gc.freeze() what exists (fewer full collections)
#   nolimit  experiment: the bot's own outbound limiter (30 messages/s, bot/telegram/limits.py)
#            allows a million a second, to find what the bot could do without it
RUNNER = """
import gc, runpy, sys, time
flags = set(sys.argv[1:])
if "nolimit" in flags:
    import bot.telegram.limits as limits
    real_init = limits.OutboundLimiter.__init__
    def lifted(self, per_second=30, *args, **kwargs):
        real_init(self, 1_000_000, *args, **kwargs)
    limits.OutboundLimiter.__init__ = lifted
if "freeze" in flags:
    import bot.telegram.app, nlu.pipeline
    gc.collect()
    gc.freeze()
if "gc-log" in flags:
    started = [0.0]
    def pause(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = (time.perf_counter() - started[0]) * 1000
        if took > 5:
            sys.stderr.write(f"gc_pause generation={info['generation']} ms={took:.1f}\\n")
    gc.callbacks.append(pause)
sys.argv = ["bot", "run"]
runpy.run_module("bot", run_name="__main__", alter_sys=True)
"""


def think_range(text: str) -> tuple[float, float]:
    try:
        low, _, high = text.partition("-")
        bounds = (float(low), float(high or low))
    except ValueError:
        raise ArgumentTypeError("--think takes seconds, e.g. 0, 2 or 1-3") from None
    if bounds[0] < 0 or bounds[1] < bounds[0]:
        raise ArgumentTypeError("--think takes seconds, e.g. 0, 2 or 1-3")
    return bounds


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def chat_id_of(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


def update_chat(kind: str, payload: dict[str, Any]) -> int | None:
    if kind == "callback_query":
        return chat_id_of((payload.get("message") or {}).get("chat", {}).get("id"))
    if kind in ("message", "edited_message"):
        return chat_id_of(payload.get("chat", {}).get("id"))
    return None


def has_keyboard(message: dict[str, Any]) -> bool:
    return bool((message.get("reply_markup") or {}).get("inline_keyboard"))


def labels(message: dict[str, Any]) -> list[str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [str(b.get("text")) for row in rows for b in row]


class LoadEmulator(BotApiEmulator):
    """The emulator, timing reporters' updates against the bot's replies, waking each
    simulated reporter only when its own chat changes, and counting the 429s its limits gave."""

    def __init__(self, tracked: Callable[[int], bool]) -> None:
        super().__init__()
        self.tracked = tracked
        self.last_enqueued_at = 0.0
        self.action = "other"  # what the next update is, for latency by kind of action
        self.pending: dict[int, deque[tuple[float, str]]] = defaultdict(deque)
        self.replies: list[tuple[float, float, str]] = []  # (when replied, latency s, action)
        self.throttled: Counter[str] = Counter()  # 429 from the limits, by chat kind
        self.chat_events: dict[int, asyncio.Event] = {}

    def enqueue_update(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        update = super().enqueue_update(kind, payload)
        self.last_enqueued_at = now
        chat = update_chat(kind, payload)
        if chat is not None and self.tracked(chat):
            self.pending[chat].append((now, self.action))
        self.action = "other"
        return update

    async def _dispatch(self, record: RecordedRequest, method: Any) -> Any:
        chat = chat_id_of(record.params.get("chat_id"))
        try:
            result = await super()._dispatch(record, method)
        except TelegramError as error:
            if error.status == 429 and not record.injected:
                kind = "none" if chat is None else "private" if chat > 0 else "group"
                self.throttled[kind] += 1
            raise
        finally:
            if chat is not None and chat in self.chat_events:
                self.chat_events[chat].set()
        if chat is not None and record.method.lower().startswith(REPLY_PREFIXES):
            queue = self.pending.get(chat)
            while queue and queue[0][0] <= record.time:
                queued, action = queue.popleft()
                self.replies.append((record.time, record.time - queued, action))
        return result

    async def wait_in_chat(
        self, chat: int, predicate: Callable[[], Any], wait_s: float
    ) -> Any | None:
        """`predicate()` once truthy, re-checked whenever the bot acts in `chat`; None on
        timeout."""
        event = self.chat_events.setdefault(chat, asyncio.Event())
        deadline = time.monotonic() + wait_s
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)


class LoadBot(BotProcess):
    """BotProcess with its own command line (cProfile) and /proc readings."""

    def __init__(self, emulator: BotApiEmulator, data_dir: Path, workdir: Path) -> None:
        super().__init__(emulator, data_dir, workdir)
        self.argv = [sys.executable, "-m", "bot", "run"]

    async def start(self) -> None:
        since = len(self.emulator.requests)
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self.workdir, env=self.env(), stdout=log, stderr=log
            )
        try:
            await self.emulator.wait_for_request("getUpdates", since=since, timeout=60)
        except AssertionError:
            raise RuntimeError("bot did not start polling; see its log") from None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0


@dataclass
class Report:
    audience: str
    urgent: bool
    started: float
    urgent_at: float | None = None  # when the urgent update was made available
    urgent_ref: str | None = None  # from the signposting reply
    sent_at: float | None = None  # Send pressed
    ref: str | None = None  # from the confirmation (or the done prompt)
    outcome: str = "unfinished"  # ok | no_ref | stuck | unfinished
    send_presses: int = 0
    nudges: int = 0


@dataclass
class Run:
    args: Namespace
    emulator: LoadEmulator
    bot: LoadBot
    rng: random.Random
    start: float = 0.0
    deadline: float = 0.0
    stop_new: bool = False
    reports: list[Report] = field(default_factory=list)
    cpu: float = 0.0  # bot CPU seconds of processes already gone (kill)
    peak_rss: int = 0
    kills: int = 0
    faults_injected: Counter[str] = field(default_factory=Counter)


class Reporter:
    def __init__(self, run: Run, index: int) -> None:
        self.run = run
        self.user: SimUser = run.emulator.user(FIRST_REPORTER_ID + index, "R")
        self.audience = AUDIENCES[index % len(AUDIENCES)]
        self.rng = random.Random(run.rng.random())

    async def pause(self) -> None:
        low, high = self.run.args.think
        await asyncio.sleep(self.rng.uniform(low, high) if high > 0 else 0)

    def mark(self) -> int:
        """The newest message id in the chat: what the bot sends next comes after it."""
        return self.user.state.next_message_id - 1

    def text(self, words: str, action: str = "text") -> int:
        self.run.emulator.action = action
        self.user.state.started = True
        self.run.emulator.store_user_message(self.user.state, self.user.user, {"text": words})
        return self.mark()

    def command(self, name: str) -> int:
        content = {
            "text": name,
            "entities": [{"type": "bot_command", "offset": 0, "length": len(name)}],
        }
        self.run.emulator.action = name
        self.run.emulator.store_user_message(self.user.state, self.user.user, content)
        return self.mark()

    def press(self, prompt: dict[str, Any], label: str) -> int:
        rows = (prompt.get("reply_markup") or {}).get("inline_keyboard", [])
        button = next(b for row in rows for b in row if b.get("text") == label)
        data = str(button["callback_data"])
        self.run.emulator.action = "send" if label == SEND else f"button:{data.split(':')[1]}"
        self.run.emulator.issue_callback_query(
            self.user.state, self.user.user, prompt["message_id"], data
        )
        return self.mark()

    def bot_messages_after(self, since: int) -> list[dict[str, Any]]:
        found = []
        bot_id = self.run.emulator.bot_id
        for message in reversed(self.user.state.messages.values()):
            if message["message_id"] <= since:
                break
            if message.get("from", {}).get("id") == bot_id:
                found.append(message)
        return found[::-1]

    async def prompt_after(self, since: int) -> dict[str, Any] | None:
        def newest() -> dict[str, Any] | None:
            return next((m for m in self.bot_messages_after(since)[::-1] if has_keyboard(m)), None)

        return await self.run.emulator.wait_in_chat(self.user.id, newest, self.run.args.stall)

    async def loop(self) -> None:
        run = self.run
        while not run.stop_new:
            if run.args.count and len(run.reports) >= run.args.count:
                return
            if not run.args.count and time.time() >= run.deadline:
                return
            report = Report(self.audience, self.rng.random() < run.args.urgent, time.time())
            run.reports.append(report)
            await self.one_report(report)
            await self.pause()

    async def one_report(self, report: Report) -> None:
        urgent_step = self.rng.randrange(3) if report.urgent else None  # which typed answer
        typed = 0
        since = self.command("/start")
        for _ in range(80):
            prompt = await self.prompt_after(since)
            if prompt is None:  # no answer: like a person, try /start (resumes the report)
                if report.nudges >= 3:
                    report.outcome = "stuck"
                    return
                report.nudges += 1
                since = self.command("/start")
                continue
            for message in self.bot_messages_after(since):
                words = str(message.get("text", ""))
                found = REF.search(words)
                if found is None:
                    continue
                if "alerted" in words or "straight away" in words or "passed this on" in words:
                    report.urgent_ref = report.urgent_ref or found.group(0)
                elif "reference code is" in words or "added to your report" in words:
                    report.ref = report.ref or found.group(0)
            buttons, body = labels(prompt), str(prompt.get("text", ""))
            if report.sent_at is not None:
                if not report.ref and SEND in buttons and report.send_presses < 3:
                    # Send did not take: the summary pressed was older than the newest (a
                    # reply retried through a Telegram fault arrives after a later one), so
                    # the bot showed it again. A person presses Send again.
                    report.sent_at = None
                else:
                    report.outcome = "ok" if report.ref else "no_ref"
                    return
            await self.pause()
            if AUDIENCE_LABELS[self.audience] in buttons:
                since = self.press(prompt, AUDIENCE_LABELS[self.audience])
            elif SEND in buttons:
                if report.urgent and report.urgent_at is None:  # not said yet: say it now
                    since = self.urgent(report)
                    continue
                since = self.press(prompt, SEND)
                report.sent_at = time.time()
                report.send_presses += 1
            elif DANGER in body and "No" in buttons:
                since = self.press(prompt, "No")
            elif REPLY_YES in buttons:
                since = self.press(prompt, REPLY_YES if self.rng.random() < 0.7 else REPLY_NO)
            elif options := [b for b in buttons if b not in NAV]:
                skip = "Skip" in buttons and self.rng.random() < 0.2
                since = self.press(prompt, "Skip" if skip else self.rng.choice(options))
            else:  # a question answered in words
                if report.urgent and report.urgent_at is None and typed == urgent_step:
                    since = self.urgent(report)
                elif "Skip" in buttons and self.rng.random() < 0.3:
                    since = self.press(prompt, "Skip")
                else:
                    step = next((s for w, s in STEP_WORDS if w in body), "anything_else")
                    bank = WHAT[self.audience] if step == "what" else TEXTS[step]
                    since = self.text(self.rng.choice(bank))
                typed += 1
        report.outcome = "stuck"

    def urgent(self, report: Report) -> int:
        since = self.text(self.rng.choice(URGENT_PHRASES), "urgent")
        report.urgent_at = self.run.emulator.last_enqueued_at
        return since


async def inject_faults(run: Run) -> None:
    """Every few seconds: 429 bursts and 500s on the staff chat, then on sendMessage to anyone
    (the next requests of that kind fail; the emulator does not store the message)."""
    emulator, every = run.emulator, run.args.fault_every
    while time.time() + every < run.deadline:
        await asyncio.sleep(every)
        emulator.fail_next("sendMessage", 429, 3, 1, chat_id=STAFF_CHAT_ID)
        emulator.fail_next("sendMessage", 500, 2, chat_id=STAFF_CHAT_ID)
        emulator.fail_next("sendMessage", 429, 3, 1)
        emulator.fail_next("sendMessage", 500, 2)
        run.faults_injected.update({"staff_chat_429": 3, "staff_chat_500": 2})
        run.faults_injected.update({"send_429": 3, "send_500": 2})


async def kill_once(run: Run) -> None:
    """SIGKILL the bot at a random moment of the load phase and start it again."""
    span = run.args.duration if not run.args.count else 20.0
    await asyncio.sleep(run.rng.uniform(0.3, 0.7) * span)
    run.cpu += run.bot.cpu_seconds()
    run.peak_rss = max(run.peak_rss, run.bot.peak_rss_kib())
    await run.bot.kill()
    run.kills += 1
    await asyncio.sleep(0.5)
    await run.bot.start()


def host_busy_seconds() -> float:
    """CPU seconds all processes on this machine have used (busy, not idle or iowait)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # user..steal, without idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def db_bytes(data_dir: Path) -> int:
    return sum(
        p.stat().st_size for p in (data_dir / DB_NAME, data_dir / f"{DB_NAME}-wal") if p.exists()
    )


def read_db(data_dir: Path) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{data_dir / DB_NAME}?mode=ro", uri=True)
    try:
        cases = {
            ref: (level, submitted)
            for ref, level, submitted in con.execute("SELECT ref, level, submitted_at FROM cases")
        }
        escalations = Counter(ref for (ref,) in con.execute("SELECT case_ref FROM escalations"))
        unsent = con.execute(
            "SELECT case_ref, recipient FROM deliveries"
            " WHERE sent_at IS NULL AND cancelled_at IS NULL"
        ).fetchall()
        processed = con.execute("SELECT COUNT(*) FROM processed_updates").fetchone()[0]
    finally:
        con.close()
    return {"cases": cases, "escalations": escalations, "unsent": unsent, "processed": processed}


def staff_sends(requests: list[RecordedRequest]) -> dict[int, dict[str, list[RecordedRequest]]]:
    """Successful sendMessage requests to the staff chat and the on-call DM, by ref."""
    found: dict[int, dict[str, list[RecordedRequest]]] = {
        STAFF_CHAT_ID: defaultdict(list),
        STAFF_MEMBER_ID: defaultdict(list),
    }
    for r in requests:
        if r.method != "sendMessage" or not r.ok:
            continue
        chat = chat_id_of(r.params.get("chat_id"))
        if chat in found:
            for ref in dict.fromkeys(REF.findall(str(r.params.get("text", "")))):
                found[chat][ref].append(r)
    return found


def gc_pauses(log: str) -> dict[str, Any]:
    """Garbage collection pauses the `--gc-log` wrapper logged, by generation."""
    found: dict[str, list[float]] = defaultdict(list)
    for line in log.splitlines():
        if line.startswith("gc_pause "):
            fields = dict(part.split("=", 1) for part in line.split()[1:])
            found[fields["generation"]].append(float(fields["ms"]))
    return {
        f"gen{g}": {"n": len(v), "total_ms": round(sum(v)), "max_ms": round(max(v), 1)}
        for g, v in sorted(found.items())
    }


def bot_log_summary(log: str) -> Counter[str]:
    """ERROR/CRITICAL/WARNING lines by event name and error class only (never ids)."""
    events: Counter[str] = Counter()
    for line in log.splitlines():
        parts = line.split()
        if "Traceback" in line:
            events["Traceback"] += 1
        if len(parts) >= 5 and parts[2] in ("WARNING", "ERROR", "CRITICAL"):
            error = next((p for p in parts[5:] if p.startswith("error=")), "")
            events[f"{parts[2]} {parts[4]} {error}".strip()] += 1
    return events


async def wait_for_escalations(run: Run, wait_s: float) -> None:
    """Until every urgent case known to its reporter has reached the staff chat and the DM."""
    for _ in range(int(wait_s / 0.5) + 1):
        wanted = {r.urgent_ref or r.ref for r in run.reports if r.urgent and r.urgent_at}
        wanted.discard(None)
        sends = staff_sends(run.emulator.requests)
        if not wanted - set(sends[STAFF_CHAT_ID]) and not wanted - set(sends[STAFF_MEMBER_ID]):
            return
        await asyncio.sleep(0.5)


async def drive(args: Namespace, workdir: Path) -> dict[str, Any]:
    data_dir = workdir / "data"
    create_keys(data_dir, "bench", "bench passphrase for load tests", **FAST_KDF)
    emulator = LoadEmulator(lambda chat: chat >= FIRST_REPORTER_ID)
    async with emulator:
        if args.mode == "telegram":
            emulator.set_rate_limits(
                per_second=30, per_private_chat_per_second=1, per_group_per_minute=20
            )
        staff = emulator.group(STAFF_CHAT_ID, "staff")
        await emulator.add_bot_to_group(staff, emulator.user(STAFF_MEMBER_ID, "Asha"))
        bot = LoadBot(emulator, data_dir, workdir)
        bot.env_overrides.update(BOT_ENV)
        if args.mode == "telegram":  # the bot's default, unless asked to compare without
            pace = "false" if args.no_pace_private_chats else "true"
            bot.env_overrides["SAFEGUARD_TELEGRAM__PACE_PRIVATE_CHATS"] = pace
        if args.mode == "capacity":
            # What one process can do: the bot's own Telegram pacing (30 messages/s, one a
            # second per private chat: the telegram mode measures it) lifted.
            bot.env_overrides["SAFEGUARD_TELEGRAM__MESSAGES_PER_SECOND"] = "1000"
            bot.env_overrides["SAFEGUARD_TELEGRAM__PACE_PRIVATE_CHATS"] = "false"
        if args.think[1] == 0 or args.no_flood_limits:
            bot.env_overrides.update(NO_FLOOD_LIMITS)
        flags = [
            flag
            for flag, wanted in (
                ("gc-log", args.gc_log),
                ("freeze", args.gc_freeze),
                ("nolimit", args.lift_bot_limiter),
            )
            if wanted
        ]
        if flags:
            runner = workdir / "run_bot.py"
            runner.write_text(RUNNER)
            bot.argv = [sys.executable, str(runner), *flags]
        if args.profile:
            profiler = [sys.executable, "-m", "cProfile", "-o", str(args.profile_out)]
            bot.argv = profiler + (bot.argv[1:] if flags else ["-m", "bot", "run"])
        run = Run(args, emulator, bot, random.Random(args.seed))
        await bot.start()
        on_call = emulator.user(STAFF_MEMBER_ID)
        await on_call.send_text("/start")  # a private chat with the bot, so DMs are not refused
        await on_call.wait_for_bot_message(contains="Who is this about?", timeout=30)
        await asyncio.sleep(0.5)
        db_empty = db_bytes(data_dir)
        cpu_before = bot.cpu_seconds()
        harness_before = resource.getrusage(resource.RUSAGE_SELF)
        host_before = host_busy_seconds()
        since = len(emulator.requests)

        run.start = time.time()
        run.deadline = run.start + args.duration
        reporters = [Reporter(run, i) for i in range(args.reporters)]

        async def staggered(i: int, reporter: Reporter) -> None:
            await asyncio.sleep(args.ramp * i / max(1, args.reporters))
            await reporter.loop()

        tasks = [asyncio.create_task(staggered(i, r)) for i, r in enumerate(reporters)]
        helpers = []
        if args.faults:
            helpers.append(asyncio.create_task(inject_faults(run)))
        if args.kill:
            helpers.append(asyncio.create_task(kill_once(run)))
        load_end = run.deadline if not args.count else None
        if load_end is not None:
            await asyncio.sleep(max(0.0, load_end - time.time()))
            run.stop_new = True
            _, late = await asyncio.wait(tasks, timeout=args.drain)
        else:
            _, late = await asyncio.wait(tasks, timeout=args.duration + args.drain)
            run.stop_new = True
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        load_stop = time.time()
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        harness_after = resource.getrusage(resource.RUSAGE_SELF)
        host_busy = host_busy_seconds() - host_before
        bot_busy = run.cpu + bot.cpu_seconds() - cpu_before
        await wait_for_escalations(run, args.drain)
        await asyncio.sleep(args.settle)  # late repeats would show as duplicates
        db_running = db_bytes(data_dir)
        cpu = run.cpu + bot.cpu_seconds() - cpu_before
        peak_rss = max(run.peak_rss, bot.peak_rss_kib())
        code = await bot.stop()
        db = read_db(data_dir)
        harness_cpu = sum(
            getattr(harness_after, f) - getattr(harness_before, f) for f in ("ru_utime", "ru_stime")
        )
        return summarise(
            run,
            emulator.requests[since:],
            db,
            {
                "cpu": cpu,
                "peak_rss_kib": peak_rss,
                "db_empty": db_empty,
                "db_running": db_running,
                "db_stopped": db_bytes(data_dir),
                "load_s": load_stop - run.start,
                "harness_cpu": harness_cpu,
                "others_cpu": host_busy - harness_cpu - bot_busy,
                "exit_code": code,
                "log": bot_log_summary(bot.log()),
                "gc": gc_pauses(bot.log()),
                "violations": len(emulator.violations),
            },
        )


def summarise(
    run: Run, requests: list[RecordedRequest], db: dict[str, Any], m: dict[str, Any]
) -> dict[str, Any]:
    args, reports = run.args, run.reports
    replies = [(t, lat, a) for t, lat, a in run.emulator.replies if t >= run.start]
    latencies = [lat * 1000 for _, lat, _ in replies]
    by_action: dict[str, list[float]] = defaultdict(list)
    for _, lat, action in replies:
        by_action[action].append(lat * 1000)
    span = (max(t for t, _, _ in replies) - run.start) if replies else 0.0
    steady_from, steady_to = run.start + args.ramp, run.start + args.duration
    steady = [t for t, _, _ in replies if steady_from <= t <= steady_to]
    outcomes = Counter(r.outcome for r in reports)
    sends_ok = sum(1 for r in requests if r.ok and r.method.startswith(("send", "edit")))
    sent = [r for r in reports if r.sent_at is not None]
    given = [r.ref for r in reports if r.ref]
    cases: dict[str, tuple[str, str | None]] = db["cases"]
    submitted = {ref for ref, (_, at) in cases.items() if at}
    to_reporters = [
        str(r.params.get("text"))
        for r in requests
        if r.method == "sendMessage"
        and r.ok
        and "reference code is" in str(r.params.get("text"))
        and chat_id_of(r.params.get("chat_id")) != STAFF_CHAT_ID
    ]
    confirmations = Counter(
        ref
        for text in to_reporters
        if CONFIRMATION_REPEAT not in text
        for ref in set(REF.findall(text))
    )
    repeats = sum(1 for text in to_reporters if CONFIRMATION_REPEAT in text)
    # Escalations.
    sends = staff_sends(requests)
    urgent = [r for r in reports if r.urgent and r.urgent_at is not None]
    esc_latency: list[float] = []
    lost_chat = lost_dm = dup_chat = dup_dm = resent = unknown_ref = queued = 0
    waiting = {(ref, "staff_chat" if who == "staff_chat" else "dm") for ref, who in db["unsent"]}
    for r in urgent:
        ref = r.urgent_ref or r.ref
        if ref is None:
            unknown_ref += 1
            continue
        expected = max(1, db["escalations"].get(ref, 0))
        firsts: list[float] = []
        for chat in (STAFF_CHAT_ID, STAFF_MEMBER_ID):
            got = sends[chat].get(ref, [])
            plain = [q for q in got if RESENT_MARK not in str(q.params.get("text"))]
            resent += len(got) - len(plain)
            extra = max(0, len(plain) - expected)
            kind = "staff_chat" if chat == STAFF_CHAT_ID else "dm"
            if not got and (ref, kind) in waiting:
                queued += 1  # not lost: still waiting in the database for its next attempt
            elif chat == STAFF_CHAT_ID:
                lost_chat += not got
                dup_chat += extra
            else:
                lost_dm += not got
                dup_dm += extra
            firsts.extend(q.time for q in got[:1])
        if firsts and r.urgent_at is not None:
            esc_latency.append((min(firsts) - r.urgent_at) * 1000)
    urgent_refs = {r.urgent_ref or r.ref for r in urgent}
    unexpected = sum(n for ref, n in db["escalations"].items() if ref not in urgent_refs)
    cpu_per_k = m["cpu"] / len(replies) * 1000 if replies else None
    reports_done = len(submitted) or 1
    ok = [r for r in reports if r.outcome == "ok"]
    return {
        "mode": args.mode,
        "reporters": args.reporters,
        "think_s": list(args.think),
        "urgent_share": args.urgent,
        "duration_s": args.duration if not args.count else None,
        "count": args.count or None,
        "faults": args.faults,
        "experiments": [
            name
            for name, on in (
                ("gc.freeze", args.gc_freeze),
                ("bot limiter lifted", args.lift_bot_limiter),
            )
            if on
        ],
        "kills": run.kills,
        "load_phase_s": round(m["load_s"], 1),
        "updates_answered": len(replies),
        "bot_sends_per_s": round(sends_ok / span, 1) if span else None,
        "updates_per_s": round(len(replies) / span, 1) if span else None,
        "updates_per_s_steady": round(len(steady) / max(1e-9, steady_to - steady_from), 1)
        if not args.count and steady_to > steady_from
        else None,
        "reply_ms_p50": _r(percentile(latencies, 0.5)),
        "reply_ms_p95": _r(percentile(latencies, 0.95)),
        "reply_ms_p99": _r(percentile(latencies, 0.99)),
        "reply_ms_max": _r(max(latencies) if latencies else None),
        "reply_ms_by_action": {
            action: {
                "n": len(values),
                "p50": _r(percentile(values, 0.5)),
                "p99": _r(percentile(values, 0.99)),
            }
            for action, values in sorted(by_action.items())
        },
        "escalation_ms_p50": _r(percentile(esc_latency, 0.5)),
        "escalation_ms_p99": _r(percentile(esc_latency, 0.99)),
        "escalation_ms_max": _r(max(esc_latency) if esc_latency else None),
        "bot_cpu_s": round(m["cpu"], 2),
        "bot_cpu_s_per_1k_updates": _r(cpu_per_k, 2),
        "bot_cpu_util": round(m["cpu"] / m["load_s"], 2) if m["load_s"] else None,
        "harness_cpu_util": round(m["harness_cpu"] / m["load_s"], 2) if m["load_s"] else None,
        "other_processes_cpu_util": round(m["others_cpu"] / m["load_s"], 2),
        "host_cpus": os.cpu_count(),
        "bot_peak_rss_mib": round(m["peak_rss_kib"] / 1024, 1),
        "db_bytes_running": m["db_running"],
        "db_bytes_empty": m["db_empty"],
        "db_kib_per_1k_reports": round(
            (m["db_running"] - m["db_empty"]) / reports_done * 1000 / 1024, 1
        ),
        "db_kib_per_1k_reports_after_stop": round(
            (m["db_stopped"] - m["db_empty"]) / reports_done * 1000 / 1024, 1
        ),
        "db_mib_running": round(m["db_running"] / 2**20, 1),
        "db_mib_after_stop": round(m["db_stopped"] / 2**20, 1),
        "throttled_429": sum(run.emulator.throttled.values()),
        "throttled_429_by_chat": dict(run.emulator.throttled),
        "faults_injected": dict(run.faults_injected),
        "reports_started": len(reports),
        "reports_sent": len(sent),
        "reports_confirmed": len(ok),
        "reports_unfinished": outcomes["unfinished"],
        "reports_stuck": outcomes["stuck"],
        "reports_nudged": sum(1 for r in reports if r.nudges),
        "reports_lost_no_ref": outcomes["no_ref"],
        "reports_lost_not_in_db": sum(1 for ref in given if ref not in submitted),
        "reports_dup_confirmation": sum(n - 1 for n in confirmations.values() if n > 1),
        "reports_confirmation_repeated": repeats,
        "reports_dup_refs_given": len(given) - len(set(given)),
        "db_submitted_cases": len(submitted),
        "db_submitted_unconfirmed": len(submitted - set(given)),
        "urgent_messages": len(urgent),
        "urgent_ref_unknown": unknown_ref,
        # The reporter never saw the signposting reply ("call 999", the reference) to it.
        "urgent_signposting_missing": sum(1 for r in urgent if r.urgent_ref is None),
        "escalations_in_db": sum(db["escalations"].values()),
        "escalations_lost_staff_chat": lost_chat,
        "escalations_lost_dm": lost_dm,
        "escalations_dup_staff_chat": dup_chat,
        "escalations_dup_dm": dup_dm,
        "escalations_resent_marked": resent,
        "escalations_unexpected": unexpected,
        "deliveries_unsent": len(db["unsent"]),
        "escalations_still_queued": queued,
        "processed_updates_rows": db["processed"],
        "bot_exit_code": m["exit_code"],
        "api_violations": m["violations"],
        "bot_log": dict(m["log"]),
        "gc_pauses_over_5ms": m["gc"],
    }


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


CAPACITY_TARGET = ">= 300 (capacity, 100 reporters)"
ROWS = [
    ("updates/s (all | steady)", "updates_per_s updates_per_s_steady", CAPACITY_TARGET),
    ("updates answered | bot sends+edits per s", "updates_answered bot_sends_per_s", ""),
    ("reply ms p50 | p95 | p99 | max", "reply_ms_p50 reply_ms_p95 reply_ms_p99 reply_ms_max",
     "p99 <= 250 (capacity, at >= 300/s)"),
    ("escalation ms p50 | p99 | max", "escalation_ms_p50 escalation_ms_p99 escalation_ms_max",
     "p99 <= 1000 (telegram)"),
    ("bot CPU s | per 1k updates", "bot_cpu_s bot_cpu_s_per_1k_updates", ""),
    ("CPU use: bot | harness | others (cores)",
     "bot_cpu_util harness_cpu_util other_processes_cpu_util", "host_cpus"),
    ("bot peak RSS MiB", "bot_peak_rss_mib", ""),
    ("DB KiB/1k reports: running | stopped; MiB",
     "db_kib_per_1k_reports db_kib_per_1k_reports_after_stop db_mib_running db_mib_after_stop",
     ""),
    ("429s from the limits", "throttled_429", "0 in steady state (telegram)"),
    ("reports started | sent | confirmed", "reports_started reports_sent reports_confirmed", ""),
    ("reports unfinished | stuck | nudged", "reports_unfinished reports_stuck reports_nudged", ""),
    ("reports lost: no ref | not in DB", "reports_lost_no_ref reports_lost_not_in_db", "0"),
    ("reports dup: confirmation | DB unconfirmed | repeat, marked",
     "reports_dup_confirmation db_submitted_unconfirmed reports_confirmation_repeated", "0"),
    ("urgent messages | ref unknown | no signposting",
     "urgent_messages urgent_ref_unknown urgent_signposting_missing", "0 no signposting"),
    ("alerts raised (escalations in DB)", "escalations_in_db", "= urgent messages"),
    ("escalations lost: chat | DM", "escalations_lost_staff_chat escalations_lost_dm", "0"),
    ("escalations dup: chat | DM | marked",
     "escalations_dup_staff_chat escalations_dup_dm escalations_resent_marked", "0"),
    ("escalations still queued | unsent rows | for refs no reporter saw",
     "escalations_still_queued deliveries_unsent escalations_unexpected", "0"),
    ("bot exit | API violations | kills", "bot_exit_code api_violations kills", ""),
]  # fmt: skip


def print_table(result: dict[str, Any]) -> None:
    think = "-".join(f"{t:g}" for t in dict.fromkeys(result["think_s"]))
    span = f"{result['duration_s']}s" if result["duration_s"] else f"{result['count']} reports"
    print(
        f"mode {result['mode']}, {result['reporters']} reporters, think {think}s, urgent "
        f"{result['urgent_share']:g}, {span}, faults {'on' if result['faults'] else 'off'}, "
        f"load phase {result['load_phase_s']}s"
        + (f"; EXPERIMENT: {', '.join(result['experiments'])}" if result["experiments"] else "")
    )
    rows = [("figure", "value", "target")]
    for name, keys, target in ROWS:
        values = " | ".join("-" if result[k] is None else str(result[k]) for k in keys.split())
        rows.append((name, values, f"{result[target]} CPUs" if target in result else target))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("-" * (sum(widths) + 4))
    print(
        "reply ms by action: "
        + ", ".join(
            f"{a} n={v['n']} p50={v['p50']} p99={v['p99']}"
            for a, v in result["reply_ms_by_action"].items()
        )
    )
    if result["gc_pauses_over_5ms"]:
        print(f"bot GC pauses over 5 ms: {result['gc_pauses_over_5ms']}")
    if result["throttled_429_by_chat"]:
        print(f"429s by chat kind: {result['throttled_429_by_chat']}")
    if result["faults_injected"]:
        print(f"faults injected: {result['faults_injected']}")
    if result["bot_log"]:
        print("bot log (warnings and errors by event):")
        for event, count in sorted(result["bot_log"].items(), key=lambda kv: -kv[1]):
            print(f"  {count:6d}  {event}")


def profile_tables(path: Path, top: int = 15) -> dict[str, list[dict[str, Any]]]:
    stats = pstats.Stats(str(path))
    total = stats.total_tt or 1.0  # type: ignore[attr-defined]
    entries = []
    for (filename, line, name), (_, calls, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = filename.replace(str(ROOT) + "/", "")
        if not (where.startswith("bot/") or "aiogram" in where or "aiosqlite" in where):
            continue
        if "site-packages/" in where:
            where = where.split("site-packages/", 1)[1]
        entries.append(
            {
                "function": f"{where}:{line}:{name}",
                "calls": calls,
                "tottime_s": round(tt, 3),
                "cumtime_s": round(ct, 3),
                "tot_share": round(tt / total, 3),
                "cum_share": round(ct / total, 3),
            }
        )
    return {
        "total_s": [{"profiled_s": round(total, 2)}],
        "by_cumulative": sorted(entries, key=lambda e: -e["cumtime_s"])[:top],
        "by_total": sorted(entries, key=lambda e: -e["tottime_s"])[:top],
    }


def print_profile(tables: dict[str, list[dict[str, Any]]]) -> None:
    print(f"\nprofile: {tables['total_s'][0]['profiled_s']} s profiled in the main thread")
    for key in ("by_cumulative", "by_total"):
        print(f"\ntop {len(tables[key])} in bot/, aiogram, aiosqlite {key.replace('_', ' ')}:")
        print(f"{'cum s':>8} {'cum %':>6} {'tot s':>8} {'tot %':>6} {'calls':>9}  function")
        for e in tables[key]:
            print(
                f"{e['cumtime_s']:8.2f} {100 * e['cum_share']:6.1f} {e['tottime_s']:8.2f} "
                f"{100 * e['tot_share']:6.1f} {e['calls']:9d}  {e['function']}"
            )


def main() -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reporters", type=int, default=100)
    parser.add_argument("--mode", choices=("capacity", "telegram"), default="capacity")
    parser.add_argument("--think", type=think_range, default=(1.0, 3.0), help="MIN-MAX s")
    parser.add_argument("--urgent", type=float, default=0.1, help="share of urgent reports")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--count", type=int, default=0, help="stop after N reports instead")
    parser.add_argument("--ramp", type=float, default=2.0, help="reporters start over S s")
    parser.add_argument("--stall", type=float, default=0.0, help="s without an answer: /start")
    parser.add_argument("--drain", type=float, default=60.0, help="s to finish open reports")
    parser.add_argument("--settle", type=float, default=2.0, help="then s for late repeats")
    parser.add_argument("--faults", action="store_true", help="inject 429s and 500s")
    parser.add_argument("--fault-every", type=float, default=10.0)
    parser.add_argument("--kill", action="store_true", help="kill -9 the bot once, restart it")
    parser.add_argument("--profile", action="store_true", help="run the bot under cProfile")
    parser.add_argument("--gc-log", action="store_true", help="log the bot's GC pauses")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="experiment: gc.freeze() after the bot's imports"
    )
    parser.add_argument(
        "--lift-bot-limiter",
        action="store_true",
        help="experiment: the bot's own 30 messages/s limiter lifted",
    )
    parser.add_argument("--profile-out", type=Path, default=Path("/tmp/safeguard-load.prof"))
    parser.add_argument(
        "--no-flood-limits", action="store_true", help="lift them (always with --think 0)"
    )
    parser.add_argument(
        "--no-pace-private-chats",
        action="store_true",
        help="telegram mode: the bot sends to each private chat without its 1/s pace",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not args.stall:
        args.stall = 120.0 if args.mode == "telegram" else 10.0 if args.faults else 30.0
    with tempfile.TemporaryDirectory(prefix="safeguard-load-") as tmp:
        result = asyncio.run(drive(args, Path(tmp)))
    if args.profile:
        result["profile"] = profile_tables(args.profile_out)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
        if args.profile:
            print_profile(result["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
