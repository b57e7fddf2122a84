"""The "rasa engine": asks a Rasa 3.6 NLU server what a message means.

Rasa runs as a separate process (`scripts/rasa.sh serve`): it needs Python 3.10 and TensorFlow,
which cannot live in the bot's own interpreter. A separate process can be slow, restarting or
gone, and a message saying a child is in danger must still be understood then, so every failure
of the server answers with the fallback model (the embedded one) instead of an error. Each such
failure is logged as ``rasa_unavailable error=<ExceptionClass>``: the class is enough to tell an
outage from a timeout, and the message text is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any, TypeGuard

import aiohttp

from bot.errors import ConfigError
from nlu.types import Entity, IntentModel, IntentScore, ModelOutput

log = logging.getLogger("safeguard.nlu")

ENGINE = "rasa"


class MalformedAnswerError(ValueError):
    """Rasa answered 200 with something that is not a usable parse (no intent, wrong shapes).

    Raised and caught inside this module only, so the log names what went wrong; it never
    reaches a caller, who gets the fallback's answer instead.
    """


class RasaEngine:
    """An :class:`~nlu.types.IntentModel` backed by a Rasa server's ``POST /model/parse``.

    ``timeout_seconds`` bounds the whole request (connect, send, Rasa's work, reading the
    answer): the bot answers a person in a chat, and a parse that takes longer is worth less than
    the fallback's answer now. A session may be passed in to share a connection pool; otherwise
    one is opened on first use (inside the running loop, as aiohttp wants) and closed by
    :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        fallback: IntentModel,
        timeout_seconds: float = 0.5,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        base = url.strip().rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ConfigError(f"Rasa URL must start with http:// or https://, not {url!r}")
        if not timeout_seconds > 0:
            raise ConfigError(f"Rasa timeout must be positive, not {timeout_seconds!r}")
        self._base = base
        self._fallback = fallback
        self._timeout = timeout_seconds
        self._session = session
        self._owns_session = session is None

    @property
    def url(self) -> str:
        return self._base

    async def predict(self, text: str) -> ModelOutput:
        """Rasa's parse of ``text``, or the fallback's if Rasa cannot give one in time.

        Any failure counts (refused connection, timeout, non-200 status, JSON that is not a
        parse): none of them may cost a message its intent.
        """
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self._parse(text)
            return parse_answer(answer)
        except Exception as exc:  # any failure of Rasa: fall back, never lose the message
            log.warning("rasa_unavailable error=%s", type(exc).__name__)
        return await self._fallback.predict(text)

    async def healthy(self) -> bool:
        """True when the server answers ``GET /status``, i.e. it is up with a model loaded.

        Rasa answers 409 there while no model is loaded, so this is a readiness check, not just
        a liveness one. Failures are expected here (it is how a caller finds Rasa is down), so
        they return False without a log line.
        """
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._get_session().get(f"{self._base}/status") as response,
            ):
                return response.status == 200
        except Exception:  # down, slow or unreachable: all the same answer
            return False

    async def close(self) -> None:
        """Close the HTTP session if this engine opened it (a shared one is its owner's)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    async def _parse(self, text: str) -> Any:
        async with self._get_session().post(
            f"{self._base}/model/parse", json={"text": text}
        ) as response:
            response.raise_for_status()
            # content_type=None: parse the body whatever Content-Type it came with; invalid
            # JSON still raises (json.JSONDecodeError, a ValueError).
            return await response.json(content_type=None)


def parse_answer(answer: Any) -> ModelOutput:
    """Map Rasa's ``/model/parse`` JSON onto :class:`~nlu.types.ModelOutput`.

    Strict about the intent (without one there is nothing to act on, so the caller falls back)
    and about entity spans (offsets index the message); entity values that are numbers are kept
    as their text, since other Rasa extractors can produce them.
    """
    if not isinstance(answer, Mapping):
        raise MalformedAnswerError("answer is not an object")
    intent_json = answer.get("intent")
    if not isinstance(intent_json, Mapping) or not intent_json.get("name"):
        raise MalformedAnswerError("answer names no intent")
    intent = _intent_score(intent_json)

    ranking_json = answer.get("intent_ranking") or []
    if not isinstance(ranking_json, list):
        raise MalformedAnswerError("intent_ranking is not a list")
    ranking = tuple(_intent_score(item) for item in ranking_json) or (intent,)

    entities_json = answer.get("entities") or []
    if not isinstance(entities_json, list):
        raise MalformedAnswerError("entities is not a list")
    entities: dict[tuple[str, int, int], Entity] = {}
    for item in entities_json:
        entity = _entity(item)
        # DIET and RegexEntityExtractor may both find the same span; keep the first one.
        entities.setdefault((entity.entity, entity.start, entity.end), entity)

    return ModelOutput(
        intent=intent, ranking=ranking, entities=tuple(entities.values()), engine=ENGINE
    )


def _intent_score(item: Any) -> IntentScore:
    if not isinstance(item, Mapping):
        raise MalformedAnswerError("intent is not an object")
    name = item.get("name")
    confidence = item.get("confidence")
    if not isinstance(name, str) or not name:
        raise MalformedAnswerError("intent has no name")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise MalformedAnswerError("intent confidence is not a number")
    if not math.isfinite(confidence):
        raise MalformedAnswerError("intent confidence is not finite")
    return IntentScore(name=name, confidence=min(1.0, max(0.0, float(confidence))))


def _entity(item: Any) -> Entity:
    if not isinstance(item, Mapping):
        raise MalformedAnswerError("entity is not an object")
    name = item.get("entity")
    value = item.get("value")
    start = item.get("start")
    end = item.get("end")
    if not isinstance(name, str) or not name:
        raise MalformedAnswerError("entity has no name")
    if not _is_int(start) or not _is_int(end) or not 0 <= start <= end:
        raise MalformedAnswerError("entity span is not a pair of offsets")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise MalformedAnswerError("entity value is not text")
    return Entity(entity=name, value=str(value), start=start, end=end)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
