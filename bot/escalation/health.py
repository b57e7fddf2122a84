"""Is the bot able to wake someone? For `safeguard health` (exit status) and GET /healthz.

Healthy means: the delivery worker has checked in recently (it writes a heartbeat to the
database every few seconds), and no alert has been waiting for delivery longer than
`health.stale_after_seconds`. Unacknowledged cases are reported too, but are a matter for
the on-call team, not a fault of the bot.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime

from aiohttp import web

from bot.config import HealthSettings
from bot.errors import ConfigError
from bot.escalation.outbox import HEARTBEAT
from bot.escalation.paging import utcnow
from bot.storage.sqlite import SqliteStore

log = logging.getLogger("safeguard.health")


@dataclass
class HealthReport:
    ok: bool
    heartbeat_age_seconds: float | None
    oldest_undelivered_alert_seconds: float | None
    unacknowledged_alerts: int
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


async def check(store: SqliteStore, stale_after_seconds: int) -> HealthReport:
    now = utcnow()
    heartbeat = await store.clock(HEARTBEAT)
    oldest = await store.oldest_undelivered_alert()
    unacknowledged = len(await store.unacknowledged())
    heartbeat_age = _age(heartbeat, now)
    oldest_age = _age(oldest, now)
    problems = []
    if heartbeat_age is None:
        problems.append("the delivery worker has never run (is `safeguard run` started?)")
    elif heartbeat_age > stale_after_seconds:
        problems.append(f"the delivery worker last checked in {heartbeat_age:.0f} s ago")
    if oldest_age is not None and oldest_age > stale_after_seconds:
        problems.append(f"an alert has waited {oldest_age:.0f} s for delivery")
    return HealthReport(not problems, heartbeat_age, oldest_age, unacknowledged, problems)


def _age(iso: str | None, now: datetime) -> float | None:
    if iso is None:
        return None
    return round((now - datetime.fromisoformat(iso)).total_seconds(), 1)


class HealthServer:
    """GET /healthz on 127.0.0.1: 200 when healthy, 503 when not, the report as JSON."""

    def __init__(self, store: SqliteStore, settings: HealthSettings) -> None:
        self.store = store
        self.settings = settings
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self.settings.http_port is None:
            return
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, "127.0.0.1", self.settings.http_port).start()
        except OSError:
            await self.stop()
            raise ConfigError(
                f"health.http_port {self.settings.http_port} cannot be opened (in use?)"
            ) from None
        log.info("health_endpoint_started port=%s", self.settings.http_port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        report = await check(self.store, self.settings.stale_after_seconds)
        return web.Response(
            text=report.to_json(),
            status=200 if report.ok else 503,
            content_type="application/json",
        )
