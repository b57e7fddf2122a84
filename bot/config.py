"""Settings: a TOML file, every key overridable by `SAFEGUARD_<SECTION>__<KEY>`.

Where the file comes from, first match wins: `--config PATH`, `$SAFEGUARD_CONFIG`,
`config/settings.toml` in the working directory, else the built-in defaults below.
Environment variables beat the file; the file beats the defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bot.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config/settings.toml")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONTENT_DIR = PROJECT_ROOT / "config"


class TelegramSettings(BaseModel):
    token: SecretStr | None = None
    api_base: str = "https://api.telegram.org"
    # Long-polling wait; short in tests so a stopping bot exits promptly.
    polling_timeout_seconds: int = Field(default=30, ge=0, le=50)


class StaffSettings(BaseModel):
    chat_id: int | None = None
    members: list[int] = Field(default_factory=list)


class StorageSettings(BaseModel):
    data_dir: Path = Path("data")


class LevelPolicy(BaseModel):
    ack_timeout_seconds: int = Field(gt=0)


class EscalationSettings(BaseModel):
    immediate: LevelPolicy = LevelPolicy(ack_timeout_seconds=120)
    high: LevelPolicy = LevelPolicy(ack_timeout_seconds=900)
    routine: LevelPolicy = LevelPolicy(ack_timeout_seconds=86_400)


class NluSettings(BaseModel):
    engine: Literal["embedded", "rasa"] = "embedded"
    rasa_url: str = "http://127.0.0.1:5005"


class DialogueSettings(BaseModel):
    language: str = "en"
    # Where the flows and wording live; a safeguarding lead edits these, not code.
    content_dir: Path = DEFAULT_CONTENT_DIR


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
    nlu: NluSettings = NluSettings()
    dialogue: DialogueSettings = DialogueSettings()
    logging: LoggingSettings = LoggingSettings()

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
