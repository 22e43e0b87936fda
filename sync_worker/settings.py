"""Typed settings, read once by the entry point from the environment (and ``.env``).

Prefix ``SYNC_``, nested with ``__`` (``SYNC_HUBSPOT__TOKEN``). Every credential is a
:class:`~pydantic.SecretStr`. Nothing else in the project reads ``os.environ``; tests build
``Settings(...)`` directly. :func:`load_settings` turns validation failures into a
:class:`~sync_worker.errors.ConfigError` naming the environment variable.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sync_worker.errors import ConfigError

__all__ = [
    "AlertSettings",
    "HubSpotSettings",
    "LaGrowthMachineSettings",
    "PipedriveSettings",
    "Settings",
    "default_mappings_dir",
    "describe_settings",
    "load_settings",
]

ENV_PREFIX = "SYNC_"


class HubSpotSettings(BaseModel):
    token: SecretStr | None = None
    client_secret: SecretStr | None = None
    client_id: str | None = None
    app_id: str | None = Field(default=None, description="our app's id: webhooks from it are our own writes")
    refresh_token: SecretStr | None = None
    base_url: AnyHttpUrl = AnyHttpUrl("https://api.hubapi.com")
    accept_signature_v1: bool = False
    rate_limit_per_10s: int = Field(default=100, gt=0)
    search_rate_limit_per_s: int = Field(default=5, gt=0)

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.refresh_token is not None


class PipedriveSettings(BaseModel):
    api_token: SecretStr | None = None
    oauth_token: SecretStr | None = None
    base_url: AnyHttpUrl = AnyHttpUrl("https://api.pipedrive.com")
    webhook_user: str | None = None
    webhook_password: SecretStr | None = None
    user_id: str | None = Field(default=None, description="the API user we write as: its changes are ours")
    rate_limit_per_2s: int = Field(default=80, gt=0)

    @property
    def enabled(self) -> bool:
        return self.api_token is not None or self.oauth_token is not None


class LaGrowthMachineSettings(BaseModel):
    api_key: SecretStr | None = None
    base_url: AnyHttpUrl = AnyHttpUrl("https://apiv2.lagrowthmachine.com/flow")
    webhook_secret: SecretStr | None = None
    rate_limit_per_10s: int = Field(default=50, gt=0)

    @property
    def enabled(self) -> bool:
        return self.api_key is not None


class AlertSettings(BaseModel):
    webhook_url: SecretStr | None = Field(default=None, description="Slack-compatible incoming webhook")


class Settings(BaseSettings):
    """The service's whole configuration. Field names are the environment contract."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    database_url: str = "sqlite:///./sync-worker.db"
    redis_url: str = "redis://localhost:6379/0"
    mappings_dir: Path | None = None
    public_url: AnyHttpUrl | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    webhook_max_bytes: int = Field(default=1024 * 1024, gt=0)
    report_token: SecretStr | None = Field(
        default=None, description="GET /report answers only requests carrying this token; unset: off"
    )
    poll_interval_seconds: float = Field(default=300.0, gt=0)
    leak_scan_interval_seconds: float = Field(default=3600.0, gt=0)
    full_pull_interval_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="how often each CRM's deals are pulled in full (finds vanished deals)",
    )
    mappings_reload_seconds: float = Field(default=2.0, gt=0)
    hubspot: HubSpotSettings = HubSpotSettings()
    pipedrive: PipedriveSettings = PipedriveSettings()
    lagrowthmachine: LaGrowthMachineSettings = LaGrowthMachineSettings()
    alerts: AlertSettings = AlertSettings()

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    def resolved_mappings_dir(self) -> Path:
        """``SYNC_MAPPINGS_DIR``, else ``./mappings`` when it exists, else the packaged defaults."""
        if self.mappings_dir is not None:
            return self.mappings_dir
        local = Path("mappings")
        if (local / "canonical.yaml").is_file():
            return local
        return default_mappings_dir()


def default_mappings_dir() -> Path:
    """The default mappings shipped inside the installed package."""
    return Path(str(resources.files("sync_worker") / "defaults"))


def _env_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings` from the environment, or raise :class:`ConfigError` naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            problems.append(f"{_env_name(loc)}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from exc


def describe_settings(settings: Settings) -> dict[str, str]:
    """The effective configuration as ``ENV_NAME -> value`` with every secret masked."""
    rows: dict[str, str] = {}

    def walk(model: BaseModel, prefix: tuple[str, ...]) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            loc = (*prefix, name)
            if isinstance(value, BaseModel):
                walk(value, loc)
            elif isinstance(value, SecretStr):
                rows[_env_name(loc)] = "********"
            else:
                rows[_env_name(loc)] = "" if value is None else str(value)

    walk(settings, ())
    rows[_env_name(("mappings_dir",))] = str(settings.resolved_mappings_dir())
    return rows
