"""NLU speed, memory and accuracy: the embedded engine and, side by side, a Rasa DIET model.

    .venv/bin/python benchmarks/nlu_bench.py            # embedded only
    .venv/bin/python benchmarks/nlu_bench.py --rasa     # also Rasa (scripts/rasa.sh setup+train)

Prints model load time, memory added by loading the NLU, parse latency p50/p99 and messages per
second over the held-out test split (nlu/tests/test_nlu.yml), and for each engine its intent
accuracy, macro-F1, urgent recall and false-escalation rate. Urgency always includes the safety
rules, as in the bot; the model latency is also shown without them.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def measure(name: str, nlu: object, texts: list[str], evaluation: object) -> list[str]:
    from nlu.evaluation import Evaluation
    from nlu.pipeline import Nlu

    assert isinstance(nlu, Nlu) and isinstance(evaluation, Evaluation)
    for text in texts[:20]:  # warm up
        await nlu.parse(text)
    parse_ms, model_ms = [], []
    started = time.perf_counter()
    for text in texts:
        t0 = time.perf_counter()
        await nlu.model.predict(text)
        model_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        await nlu.parse(text)
        parse_ms.append((time.perf_counter() - t0) * 1000)
    total = time.perf_counter() - started
    return [
        name,
        f"{statistics.median(model_ms):.2f} / {percentile(model_ms, 0.99):.2f}",
        f"{statistics.median(parse_ms):.2f} / {percentile(parse_ms, 0.99):.2f}",
        f"{len(texts) / (total / 2):.0f}",
        f"{evaluation.accuracy:.3f}",
        f"{evaluation.macro_f1:.3f}",
        f"{evaluation.urgent_recall:.3f}",
        f"{evaluation.false_escalation_rate:.3f}",
    ]


def start_rasa() -> tuple[subprocess.Popen[bytes], int]:
    """Set up, train (both cached) and start a Rasa server for the current data."""
    port = free_port()
    script = ROOT / "scripts" / "rasa.sh"
    subprocess.run(["bash", str(script), "setup"], check=True)
    subprocess.run(["bash", str(script), "train"], check=True)
    server = subprocess.Popen(
        ["bash", str(script), "serve", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return server, port


async def main(rasa_port: int | None) -> None:
    before = rss_mb()
    t0 = time.perf_counter()
    from nlu.pipeline import Nlu, UrgencyPolicy, load_embedded_model, model_path
    from nlu.safety import SafetyRules

    imported = time.perf_counter()
    model = load_embedded_model()  # trains once if the data changed
    t1 = time.perf_counter()
    model = load_embedded_model()
    model_load = time.perf_counter() - t1
    rules = SafetyRules.load()
    loaded = time.perf_counter()
    after = rss_mb()
    print(f"model file: {model_path()}")
    print(
        f"import {imported - t0:.2f} s, model load {model_load * 1000:.0f} ms, "
        f"safety rules load {loaded - t1 - model_load:.2f} s"
    )
    print(
        f"memory: {before:.0f} MB before, {after:.0f} MB after loading the NLU "
        f"(+{after - before:.0f} MB)"
    )

    from nlu.evaluation import DEFAULT_TEST_PATH, Evaluation, _run
    from nlu.training_data import load_training_data

    test = load_training_data(DEFAULT_TEST_PATH)
    texts = [e.text for e in test.examples]
    labels = load_training_data().intents
    policy = UrgencyPolicy.load()
    rows = []
    embedded = Nlu(model, rules, policy)
    evaluation = Evaluation(labels=labels)
    await _run(embedded, test.examples, evaluation)
    rows.append(await measure("embedded", embedded, texts, evaluation))

    if rasa_port is not None:
        from nlu.rasa_client import RasaEngine

        rasa = RasaEngine(
            f"http://127.0.0.1:{rasa_port}", fallback=_Unavailable(), timeout_seconds=5.0
        )
        for _ in range(240):
            if await rasa.healthy():
                break
            await asyncio.sleep(0.5)
        rasa_nlu = Nlu(rasa, rules, policy)
        rasa_eval = Evaluation(labels=labels)
        await _run(rasa_nlu, test.examples, rasa_eval)
        rows.append(await measure("rasa DIET", rasa_nlu, texts, rasa_eval))
        await rasa.close()

    header = [
        "engine",
        "model ms p50/p99",
        "parse ms p50/p99",
        "msg/s",
        "accuracy",
        "macro-F1",
        "urgent recall",
        "false esc.",
    ]
    print(f"\nheld-out test split: {len(texts)} messages")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


class _Unavailable:
    async def predict(self, text: str) -> object:
        raise RuntimeError("Rasa did not answer: the benchmark needs the real server")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rasa", action="store_true", help="also benchmark a Rasa DIET model")
    server, port = start_rasa() if parser.parse_args().rasa else (None, None)
    try:
        asyncio.run(main(port))
    finally:
        if server is not None:
            server.terminate()
