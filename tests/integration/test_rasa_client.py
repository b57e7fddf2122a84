"""RasaEngine against a stand-in Rasa: canned /model/parse answers from a local aiohttp server.

These need no Rasa install; they pin the mapping of Rasa's JSON and, above all, that every way
the server can fail (error status, slowness, absence, nonsense) ends in the fallback's answer,
logged by exception class and never with the message text.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.errors import ConfigError
from nlu.rasa_client import RasaEngine, parse_answer
from nlu.types import Entity, IntentScore, ModelOutput

SECRET_TEXT = "he is outside my house in Leeds right now AB12 CDE"

RASA_ANSWER: dict[str, Any] = {
    "text": SECRET_TEXT,
    "intent": {"name": "immediate_danger", "confidence": 0.91},
    "entities": [
        {
            "entity": "place",
            "start": 26,
            "end": 31,
            "value": "Leeds",
            "extractor": "DIETClassifier",
            "confidence_entity": 0.98,
        },
        # The same span again from the regex extractor: reported once.
        {"entity": "place", "start": 26, "end": 31, "value": "Leeds", "extractor": "Regex"},
        {
            "entity": "registration",
            "start": 42,
            "end": 50,
            "value": "AB12 CDE",
            "extractor": "RegexEntityExtractor",
        },
    ],
    "text_tokens": [[0, 2], [3, 5]],
    "intent_ranking": [
        {"name": "immediate_danger", "confidence": 0.91},
        {"name": "report_other", "confidence": 0.07},
        {"name": "greet", "confidence": 0.02},
    ],
    "response_selector": {"all_retrieval_intents": [], "default": {}},
}


class FakeModel:
    """The fallback: answers ``greet`` with engine "fake" and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def predict(self, text: str) -> ModelOutput:
        self.calls.append(text)
        intent = IntentScore("greet", 0.5)
        return ModelOutput(intent=intent, ranking=(intent,), entities=(), engine="fake")


@dataclass
class FakeRasa:
    """What the stand-in server does next, and what it was sent."""

    status: int = 200
    body: str | None = None  # raw body instead of the canned JSON
    answer: Any = field(default_factory=lambda: RASA_ANSWER)
    delay: float = 0.0
    requests: list[Any] = field(default_factory=list)


@pytest.fixture
async def rasa() -> AsyncIterator[tuple[FakeRasa, str]]:
    state = FakeRasa()

    async def parse(request: web.Request) -> web.Response:
        state.requests.append(await request.json())
        if state.delay:
            await asyncio.sleep(state.delay)
        if state.body is not None:
            return web.Response(status=state.status, text=state.body)
        return web.json_response(state.answer, status=state.status)

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"model_file": "nlu.tar.gz"}, status=state.status)

    app = web.Application()
    app.router.add_post("/model/parse", parse)
    app.router.add_get("/status", status)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield state, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_maps_rasa_answer(rasa: tuple[FakeRasa, str]) -> None:
    state, url = rasa
    fallback = FakeModel()
    engine = RasaEngine(url + "/", fallback)
    try:
        output = await engine.predict(SECRET_TEXT)
    finally:
        await engine.close()

    assert state.requests == [{"text": SECRET_TEXT}]
    assert fallback.calls == []
    assert output.engine == "rasa"
    assert output.intent == IntentScore("immediate_danger", 0.91)
    assert [i.name for i in output.ranking] == ["immediate_danger", "report_other", "greet"]
    assert output.ranking[1].confidence == pytest.approx(0.07)
    assert output.entities == (
        Entity("place", "Leeds", 26, 31),
        Entity("registration", "AB12 CDE", 42, 50),
    )
    assert SECRET_TEXT[26:31] == "Leeds"


async def test_server_error_falls_back(
    rasa: tuple[FakeRasa, str], caplog: pytest.LogCaptureFixture
) -> None:
    state, url = rasa
    state.status = 500
    state.body = "Internal Server Error"
    fallback = FakeModel()
    engine = RasaEngine(url, fallback)
    with caplog.at_level(logging.WARNING, logger="safeguard.nlu"):
        output = await engine.predict(SECRET_TEXT)
    await engine.close()

    assert output.engine == "fake"
    assert fallback.calls == [SECRET_TEXT]
    assert "rasa_unavailable error=ClientResponseError" in caplog.messages
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    assert "Leeds" not in caplog.text and "outside" not in caplog.text


async def test_slow_server_times_out_and_falls_back(
    rasa: tuple[FakeRasa, str], caplog: pytest.LogCaptureFixture
) -> None:
    state, url = rasa
    state.delay = 2.0
    fallback = FakeModel()
    engine = RasaEngine(url, fallback, timeout_seconds=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING, logger="safeguard.nlu"):
        output = await engine.predict(SECRET_TEXT)
    elapsed = loop.time() - started
    await engine.close()

    assert output.engine == "fake"
    assert elapsed < 1.5
    assert "rasa_unavailable error=TimeoutError" in caplog.messages
    assert "Leeds" not in caplog.text


async def test_no_server_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    fallback = FakeModel()
    engine = RasaEngine(f"http://127.0.0.1:{free_port()}", fallback)
    with caplog.at_level(logging.WARNING, logger="safeguard.nlu"):
        output = await engine.predict(SECRET_TEXT)
        assert not await engine.healthy()
    await engine.close()

    assert output.engine == "fake"
    assert fallback.calls == [SECRET_TEXT]
    # Only predict logs: healthy() reports "down" by its answer.
    assert caplog.messages == ["rasa_unavailable error=ClientConnectorError"]
    assert "Leeds" not in caplog.text


@pytest.mark.parametrize(
    ("body", "answer", "error"),
    [
        ("<html>not json</html>", None, "JSONDecodeError"),
        (None, {"text": "x", "intent": {"name": None, "confidence": 0.0}}, "MalformedAnswerError"),
        (None, {"text": "x", "intent": None, "entities": []}, "MalformedAnswerError"),
        (None, ["not", "an", "object"], "MalformedAnswerError"),
        (
            None,
            {**RASA_ANSWER, "intent": {"name": "greet", "confidence": "high"}},
            "MalformedAnswerError",
        ),
        (None, {**RASA_ANSWER, "entities": [{"entity": "age"}]}, "MalformedAnswerError"),
    ],
)
async def test_malformed_answer_falls_back(
    rasa: tuple[FakeRasa, str],
    caplog: pytest.LogCaptureFixture,
    body: str | None,
    answer: Any,
    error: str,
) -> None:
    state, url = rasa
    state.body = body
    state.answer = answer
    fallback = FakeModel()
    engine = RasaEngine(url, fallback)
    with caplog.at_level(logging.WARNING, logger="safeguard.nlu"):
        output = await engine.predict(SECRET_TEXT)
    await engine.close()

    assert output.engine == "fake"
    assert caplog.messages == [f"rasa_unavailable error={error}"]


async def test_healthy_and_shared_session(rasa: tuple[FakeRasa, str]) -> None:
    state, url = rasa
    async with aiohttp.ClientSession() as session:
        engine = RasaEngine(url, FakeModel(), session=session)
        assert await engine.healthy()
        state.status = 409  # what Rasa says while it has no model loaded
        assert not await engine.healthy()
        await engine.close()
        # A session passed in belongs to the caller: close() leaves it open.
        assert not session.closed


def test_parse_answer_defaults_and_clamps() -> None:
    output = parse_answer({"intent": {"name": "stop", "confidence": 1.0000002}})
    assert output.intent == IntentScore("stop", 1.0)
    assert output.ranking == (output.intent,)
    assert output.entities == ()

    numeric = parse_answer(
        {
            "intent": {"name": "report_self", "confidence": 0.8},
            "entities": [{"entity": "age", "value": 13, "start": 4, "end": 6}],
        }
    )
    assert numeric.entities == (Entity("age", "13", 4, 6),)


@pytest.mark.parametrize("url", ["127.0.0.1:5005", "", "ftp://rasa"])
def test_rejects_bad_url(url: str) -> None:
    with pytest.raises(ConfigError):
        RasaEngine(url, FakeModel())


def test_rejects_bad_timeout() -> None:
    with pytest.raises(ConfigError):
        RasaEngine("http://127.0.0.1:5005", FakeModel(), timeout_seconds=0)
