"""Settings: a TOML file, every key overridable by `SAFEGUARD_<SECTION>__<KEY>`.

Where the file comes from, first match wins: `--config PATH`, `$SAFEGUARD_CONFIG`,
`config/settings.toml` in the working directory, else the built-in defaults below.
Environment variables beat the file; the file beats the defaults.
"""

from __future__ import annotations

import os
from datetime import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bot.errors import ConfigError
from bot.escalation.rota import RotaSettings

DEFAULT_CONFIG_PATH = Path("config/settings.toml")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONTENT_DIR = PROJECT_ROOT / "config"


class TelegramSettings(BaseModel):
    token: SecretStr | None = None
    api_base: str = "https://api.telegram.org"
    # Long-polling wait; short in tests so a stopping bot exits promptly.
    polling_timeout_seconds: int = Field(default=30, ge=0, le=50)
    # How long any request may go unanswered before the bot gives up on it and tries again (a
    # long poll: this on top of its wait). aiogram's own 60 s meant a dead connection kept
    # the bot from hearing anyone for 90 s, and a reply to a reporter four times that.
    request_timeout_seconds: int = Field(default=20, ge=1, le=120)
    # Messages a second the bot sends at most, all chats together (5 of them kept for alerts).
    # Telegram allows about 30; raise it only for a self-hosted Bot API server or a bot with
    # Telegram's paid higher limits.
    messages_per_second: int = Field(default=30, ge=6, le=1000)
    # One message a second to each private chat, as Telegram asks. A turn is one message (the
    # 999 line first in it), so this delays only a reporter who answers within a second of
    # the bot; off, replies that bunch up behind the overall limit earn 429s (measured in
    # benchmarks/load.py --mode telegram). Deleting messages (Leave now) never waits.
    pace_private_chats: bool = True


class StaffSettings(BaseModel):
    chat_id: int | None = None
    members: list[int] = Field(default_factory=list)


class StorageSettings(BaseModel):
    data_dir: Path = Path("data")


class LevelPolicy(BaseModel):
    """How one urgency level pages people (see bot/escalation/policy.py for the steps)."""

    # Who hears first: the person on call (and the staff chat), the whole team, or nobody
    # (the case waits in /queue and the daily digest).
    notify: Literal["on_call", "team", "queue"] = "on_call"
    # Unacknowledged after this long: page the backup.
    ack_timeout_seconds: int = Field(gt=0)
    # Still unacknowledged after this long (from the start): page everyone. None: never.
    everyone_after_seconds: int | None = Field(default=None, gt=0)
    # Then page everyone again this often until someone acknowledges. None: no repeats.
    repeat_every_seconds: int | None = Field(default=None, gt=0)
    # Hold the first page until working hours begin (rota.working_hours).
    wait_for_working_hours: bool = False

    @model_validator(mode="after")
    def _steps_in_order(self) -> LevelPolicy:
        if (
            self.everyone_after_seconds is not None
            and self.everyone_after_seconds <= self.ack_timeout_seconds
        ):
            raise ValueError("everyone_after_seconds must be longer than ack_timeout_seconds")
        return self


class EscalationSettings(BaseModel):
    immediate: LevelPolicy = LevelPolicy(
        notify="on_call",
        ack_timeout_seconds=120,
        everyone_after_seconds=300,
        repeat_every_seconds=300,
    )
    high: LevelPolicy = LevelPolicy(
        notify="on_call",
        ack_timeout_seconds=900,
        everyone_after_seconds=3600,
        repeat_every_seconds=3600,
    )
    routine: LevelPolicy = LevelPolicy(
        notify="queue", ack_timeout_seconds=86_400, wait_for_working_hours=True
    )
    # What an alert shows of the reporter's own words: "summary" (signals and reasons only;
    # the words are read with a staff key) or "full" (the message that raised the alert).
    alert_text: Literal["summary", "full"] = "summary"
    # The daily digest (open cases by level, unacknowledged, oldest) posted to the staff chat,
    # local time in rota.timezone.
    digest_time: time = time(9, 0)
    # At most this many staff-chat messages a minute (Telegram allows about 20 in a group);
    # alerts due beyond it are combined into one message.
    staff_chat_per_minute: int = Field(default=18, gt=0, le=20)

    @model_validator(mode="after")
    def _routine_waits_in_the_queue(self) -> EscalationSettings:
        # Routine reports are worked from /queue and the digest; paging for them would wake
        # people for what can wait, and the alert table only holds immediate and high.
        if self.routine.notify != "queue":
            raise ValueError('escalation.routine.notify must be "queue"')
        return self


class FloodSettings(BaseModel):
    """When one sender sends far more than a person in a conversation would (bot/dialogue/
    flood.py). Nothing is dropped: a flood can be a child in crisis. Every message is still
    read, kept and checked for danger; the bot answers less often and tells staff."""

    # Messages a sender may send at once, then how many a minute on average.
    burst: int = Field(default=20, ge=1, le=1000)
    per_minute: int = Field(default=30, ge=1, le=6000)
    # Staff are told at most once per this many minutes about one sender.
    tell_staff_every_minutes: int = Field(default=30, ge=1, le=24 * 60)
    # More reports than this from one sender in 24 hours is flagged to staff.
    reports_per_day: int = Field(default=10, ge=1, le=1000)


class HealthSettings(BaseModel):
    # An HTTP health endpoint (GET /healthz) on 127.0.0.1; None: off. `safeguard health`
    # answers the same question by exit status.
    http_port: int | None = Field(default=None, ge=1, le=65535)
    # Unhealthy when the delivery worker has not checked in for this long, or an alert has
    # waited this long for delivery.
    stale_after_seconds: int = Field(default=120, gt=0)


class NluSettings(BaseModel):
    engine: Literal["embedded", "rasa"] = "embedded"
    rasa_url: str = "http://127.0.0.1:5005"


class DialogueSettings(BaseModel):
    language: str = "en"
    # Where the flows and wording live; a safeguarding lead edits these, not code.
    content_dir: Path = DEFAULT_CONTENT_DIR


class RetentionSettings(BaseModel):
    """How long anything is kept before the purge erases it (bot/storage/retention.py).

    Open cases are never purged automatically, whatever their age: they are someone's work.
    A case is erased by deleting its wrapped data keys first (crypto-shredding), then its rows;
    the audit trail keeps that it existed and when it was purged, never its content.
    """

    # Unfinished conversations (drafts) idle this long are erased, and so are cases that were
    # never submitted, never escalated and never taken by anyone.
    unfinished_after_hours: int = Field(default=24, ge=1, le=24 * 366)
    # Closed cases that were never escalated, counted from when they were closed.
    closed_after_days: int = Field(default=90, ge=1, le=36_500)
    # Closed cases that were escalated (an alert was raised). How long is for the operator's
    # records-retention schedule and their Data Protection Officer to decide, not this file:
    # child-protection records are often kept far longer than ordinary records (into the
    # child's adulthood and beyond). The default is about 25 years. 0: never erase them
    # automatically.
    escalated_after_days: int = Field(default=9125, ge=0, le=36_500)
    # Reference codes never purged whatever their age (a court case, an inquiry, a complaint).
    legal_hold: list[str] = Field(default_factory=list)
    # How often the running bot purges.
    purge_every_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    # How often the running bot rebuilds the database file (VACUUM) after a purge.
    vacuum_every_hours: int = Field(default=24, ge=1, le=24 * 366)
    # Where `safeguard backup` writes, and whose files the purge cleans; default
    # <data_dir>/backups.
    backup_dir: Path | None = None
    # Older backup files beyond this many are deleted.
    keep_backups: int = Field(default=14, ge=1, le=1000)

    @model_validator(mode="after")
    def _codes_and_periods(self) -> RetentionSettings:
        from bot.reports.reference import normalise_reference

        codes = []
        for typed in self.legal_hold:
            code = normalise_reference(typed)
            if code is None:
                raise ValueError(
                    "retention.legal_hold holds something that is not a reference code"
                )
            codes.append(code)
        self.legal_hold = sorted(set(codes))
        if 0 < self.escalated_after_days < self.closed_after_days:
            raise ValueError(
                "retention.escalated_after_days must not be shorter than closed_after_days"
            )
        return self

    def backups_in(self, data_dir: Path) -> Path:
        return self.backup_dir if self.backup_dir is not None else data_dir / "backups"


class LoggingSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SAFEGUARD_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    telegram: TelegramSettings = TelegramSettings()
    staff: StaffSettings = StaffSettings()
    storage: StorageSettings = StorageSettings()
    escalation: EscalationSettings = EscalationSettings()
    rota: RotaSettings = RotaSettings()
    health: HealthSettings = HealthSettings()
    flood: FloodSettings = FloodSettings()
    nlu: NluSettings = NluSettings()
    dialogue: DialogueSettings = DialogueSettings()
    logging: LoggingSettings = LoggingSettings()
    retention: RetentionSettings = RetentionSettings()

    @model_validator(mode="after")
    def _rota_people_are_staff(self) -> Settings:
        strangers = [n for n, uid in self.rota.people.items() if uid not in self.staff.members]
        if strangers:
            raise ValueError(
                f"rota.people names {', '.join(strangers)}, whose Telegram id is not in "
                "staff.members: they could be paged but could not acknowledge"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def resolve_config_path(explicit: Path | None) -> Path | None:
    """The TOML file to read, or None for built-in defaults."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file not found: {explicit}")
        return explicit
    from_env = os.environ.get("SAFEGUARD_CONFIG")
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigError(f"SAFEGUARD_CONFIG points to a missing file: {path}")
        return path
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def load_settings(config_path: Path | None = None) -> Settings:
    path = resolve_config_path(config_path)

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        settings = _FromFile()
    except ValidationError as exc:
        # Name the keys at fault, never echo values: a token may be among them.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings ({path or 'defaults'}): {problems}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read config file {path}: {type(exc).__name__}") from None
    return settings
