"""What sealing and opening cost: per report, per staff key, per ceremony.

    .venv/bin/python benchmarks/crypto_bench.py [--reports 200] [--staff 1,5,10]

Prints, for a realistic report (about 3 KB of JSON):
* seal time per report (one data key, HPKE-wrapped to each staff member) and its size on disk;
* open time per report for one member (unwrap the data key, then decrypt);
* unlock time of a staff key with the default Argon2id cost (64 MiB, 3 passes);
* sharing the archive with a newcomer and rotating a member's key, records per second, through
  the real store (`bot.key_ceremonies`);
* a draft seal+open (what every reporter message costs).
All on this machine's cores; no network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot import crypto, key_ceremonies  # noqa: E402
from bot.crypto import BotCrypto, StaffKey  # noqa: E402
from bot.storage.sqlite import SqliteStore  # noqa: E402

PASSPHRASE = "benchmark passphrase, not secret"
CHEAP = {"kdf_memory_kib": 8192, "kdf_iterations": 1}


def report_bytes() -> bytes:
    answers = [
        {
            "step": f"q{i}",
            "label": f"Question {i}",
            "text": "a man in a silver car near the chippy " * 3,
        }
        for i in range(12)
    ]
    return json.dumps({"kind": "report", "answers": answers, "first_messages": ["hi"] * 3}).encode()


def ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return f"p50 {p50:7.3f} ms  p99 {p99:7.3f} ms"


def team(data_dir: Path, size: int) -> list[str]:
    names = [f"Member {i}" for i in range(size)]
    crypto.create_keys(data_dir, names[0], PASSPHRASE, **CHEAP)
    for name in names[1:]:
        crypto.add_staff_key(data_dir, name, PASSPHRASE, **CHEAP)
    return names


def seal_and_open(size: int, reports: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        names = team(data_dir, size)
        bot = BotCrypto.load(data_dir)
        key = StaffKey.unlock(data_dir, names[0], PASSPHRASE)
        body = report_bytes()
        sealed, seal_t, open_t = [], [], []
        for i in range(reports):
            ref = f"BENC-H{i:03d}-0000"
            t = time.perf_counter()
            record = bot.seal_report(ref, body)
            seal_t.append(time.perf_counter() - t)
            sealed.append((ref, record))
        for ref, record in sealed:
            t = time.perf_counter()
            key.open_report(ref, record.blob, record.wrapped_keys[key.fingerprint])
            open_t.append(time.perf_counter() - t)
        stored = len(sealed[0][1].blob) + sum(len(w) for w in sealed[0][1].wrapped_keys.values())
        print(
            f"staff {size:>2}: seal {ms(seal_t)} | open {ms(open_t)} | "
            f"{len(body)} B report -> {stored} B stored"
        )


def unlock_cost() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        crypto.create_keys(data_dir, "Lead", PASSPHRASE)  # the real default cost
        samples = []
        for _ in range(5):
            t = time.perf_counter()
            StaffKey.unlock(data_dir, "Lead", PASSPHRASE)
            samples.append(time.perf_counter() - t)
        print(
            f"unlock a staff key (Argon2id {crypto.DEFAULT_KDF_MEMORY_KIB // 1024} MiB, "
            f"{crypto.DEFAULT_KDF_ITERATIONS} passes): {ms(samples)}"
        )


async def ceremonies(records: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        await key_ceremonies.init_keys(data_dir, "Lead", PASSPHRASE, **CHEAP)
        bot = BotCrypto.load(data_dir)
        async with SqliteStore(data_dir, chain=bot.chain_audit_entry) as store:
            for i in range(records):
                ref = f"CERE-M{i:03d}-0000"
                async with store.transaction() as tx:
                    await tx.ensure_case(ref, "p", None)
                    await tx.add_record(ref, "report", bot.seal_report(ref, report_bytes()))
        lead = StaffKey.unlock(data_dir, "Lead", PASSPHRASE)
        t = time.perf_counter()
        _, shared = await key_ceremonies.add_staff(data_dir, "New", PASSPHRASE, lead, **CHEAP)
        share_s = time.perf_counter() - t
        t = time.perf_counter()
        _, moved = await key_ceremonies.rotate_staff_key(data_dir, lead, PASSPHRASE, **CHEAP)
        rotate_s = time.perf_counter() - t
        print(
            f"share {shared} records with a newcomer: {share_s:.2f} s "
            f"({shared / share_s:,.0f} records/s); rotate a member's key over {moved} "
            f"records: {rotate_s:.2f} s ({moved / rotate_s:,.0f} records/s)"
        )


def drafts(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        crypto.create_keys(data_dir, "Lead", PASSPHRASE, **CHEAP)
        bot = BotCrypto.load(data_dir)
        body = report_bytes()
        samples = []
        for i in range(n):
            t = time.perf_counter()
            pseudonym = bot.pseudonym_for(i)
            bot.open_draft(pseudonym, bot.seal_draft(pseudonym, body))
            samples.append(time.perf_counter() - t)
        print(f"reporter turn: pseudonym + draft seal + open: {ms(samples)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=200)
    parser.add_argument("--staff", default="1,5,10")
    args = parser.parse_args()
    for size in (int(s) for s in args.staff.split(",")):
        seal_and_open(size, args.reports)
    drafts(2000)
    unlock_cost()
    asyncio.run(ceremonies(args.reports * 5))


if __name__ == "__main__":
    main()
