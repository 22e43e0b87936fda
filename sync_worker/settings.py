"""Typed settings, read once by the entry point from the environment (and ``.env``).

Prefix ``SYNC_``, nested with ``__``. The core's own fields are declared here; each registered
connector (:mod:`sync_worker.plugins`) adds one section, its spec's ``settings_model``, read from
``SYNC_<NAME>__*`` and reached with :meth:`Settings.section`. Every credential is a
:class:`~pydantic.SecretStr`. Nothing else in the project reads ``os.environ``; tests build
``Settings(...)`` directly. :func:`load_settings` turns validation failures into a
:class:`~sync_worker.errors.ConfigError` naming the environment variable.
"""

from __future__ import annotations

import os
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar, cast, get_origin, overload
from urllib.parse import unquote, urlsplit, urlunsplit

from dotenv import dotenv_values
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sync_worker.errors import ConfigError

__all__ = [
    "AlertSettings",
    "SettingRow",
    "Settings",
    "default_mappings_dir",
    "describe_settings",
    "load_settings",
    "mask_url",
    "setting_rows",
    "url_password",
]

ENV_PREFIX = "SYNC_"
_S = TypeVar("_S", bound=BaseModel)


def _connector_models() -> dict[str, type[BaseModel]]:
    from sync_worker.plugins import registry

    return {name: spec.settings_model for name, spec in registry().items()}


def _nest(flat: dict[str, str | None], names: set[str]) -> dict[str, Any]:
    """``{"sync_zoho__client_id": v}`` -> ``{"zoho": {"client_id": v}}`` for the registered names."""
    out: dict[str, Any] = {}
    prefix = ENV_PREFIX.lower()
    for key, value in flat.items():
        lowered = key.lower()
        if value is None or not lowered.startswith(prefix):
            continue
        parts = lowered[len(prefix) :].split("__")
        if len(parts) < 2 or parts[0] not in names:
            continue
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[parts[-1]] = value
    return out


class _ConnectorEnvSource(PydanticBaseSettingsSource):
    """``SYNC_<NAME>__*`` from the environment (over ``.env``) for every registered connector."""

    def __init__(self, settings_cls: type[BaseSettings], env_file: Any) -> None:
        super().__init__(settings_cls)
        self._env_file = env_file

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        models = _connector_models()
        flat: dict[str, str | None] = {}
        files = self._env_file if isinstance(self._env_file, list | tuple) else [self._env_file]
        for path in files:
            if path is not None and Path(path).is_file():
                flat.update(dotenv_values(path))
        flat.update(os.environ)
        nested = _nest(flat, set(models))
        for name, section in nested.items():
            self._decode_complex(models[name], section)
        return nested

    def _decode_complex(self, model: type[BaseModel], section: dict[str, Any]) -> None:
        """A list or mapping setting given as text: JSON, decoded as pydantic-settings decodes its
        own complex values, or for a list also a comma-separated ``a,b``; bad JSON is left for the
        model's validation to name."""
        for field_name, info in model.model_fields.items():
            raw = section.get(field_name)
            if not isinstance(raw, str) or not self.field_is_complex(info):
                continue
            text = raw.strip()
            if text.startswith(("[", "{")):
                try:
                    section[field_name] = self.decode_complex_value(field_name, info, text)
                except ValueError:
                    continue
            elif (get_origin(info.annotation) or info.annotation) in _SEQUENCES:
                section[field_name] = [part.strip() for part in text.split(",") if part.strip()]


_SEQUENCES = (list, tuple, set, frozenset)


class AlertSettings(BaseModel):
    webhook_url: SecretStr | None = Field(default=None, description="Slack-compatible incoming webhook")
    min_amount: Decimal | None = Field(
        default=None,
        ge=0,
        description="a new flag on a deal of at least this amount (its own currency) gets its own alert"
        " besides the scan's digest; unset: the digest only",
    )


class Settings(BaseSettings):
    """The service's whole configuration. Field names are the environment contract."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="allow",
    )

    database_url: str = Field(
        default="sqlite:///./sync-worker.db",
        description="the state store: sqlite:///path, or postgresql://... for production",
    )
    redis_url: str = Field(
        default="redis://localhost:6379/0",
        description="shared rate limiter, locks, leases, and the Dramatiq broker"
        " unless SYNC_BROKER_URL is set",
    )
    broker_url: SecretStr | None = Field(
        default=None,
        description="Dramatiq broker: redis:// (unset: SYNC_REDIS_URL) or amqp:// for RabbitMQ",
    )
    mappings_dir: Path | None = Field(
        default=None,
        description="where the mapping YAML lives;"
        " unset: ./mappings when it exists, else the packaged defaults",
    )
    public_url: AnyHttpUrl | None = Field(
        default=None,
        description="external base URL the providers call: signed URIs and callback URLs are built from it;"
        " unset: the URL a request arrived at",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="DEBUG, INFO, WARNING or ERROR"
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="text, or json for one JSON object a line"
    )
    webhook_max_bytes: int = Field(
        default=1024 * 1024, gt=0, description="largest webhook body accepted, in bytes (larger: 413)"
    )
    report_token: SecretStr | None = Field(
        default=None, description="GET /report answers only requests carrying this token; unset: off"
    )
    poll_interval_seconds: float = Field(
        default=300.0, gt=0, description="seconds between incremental polls of each source"
    )
    leak_scan_interval_seconds: float = Field(default=3600.0, gt=0, description="seconds between leak scans")
    full_pull_interval_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="how often each CRM's deals are pulled in full (finds vanished deals)",
    )
    mappings_reload_seconds: float = Field(
        default=2.0, gt=0, description="seconds between a running service's checks for edited mapping files"
    )
    alerts: AlertSettings = AlertSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env_file = getattr(dotenv_settings, "env_file", None)
        connectors = _ConnectorEnvSource(settings_cls, env_file)
        return (init_settings, connectors, env_settings, dotenv_settings, file_secret_settings)

    @model_validator(mode="before")
    @classmethod
    def _connector_sections(cls, data: Any) -> Any:
        """Validate each registered connector's section with its model; drop unknown extras."""
        if not isinstance(data, dict):
            return data
        models = _connector_models()
        out = {k: v for k, v in data.items() if k in cls.model_fields}
        problems: list[str] = []
        for name, model in models.items():
            raw = data.get(name)
            if isinstance(raw, model):
                out[name] = raw
                continue
            try:
                out[name] = model.model_validate(raw if raw is not None else {})
            except ValidationError as exc:
                for err in exc.errors():
                    problems.append(f"{_env_name((name, *err['loc']))}: {err['msg']}")
        if problems:
            raise PydanticCustomError("connector_settings", "\n  ".join(problems))
        return out

    @overload
    def section(self, name: str) -> BaseModel: ...

    @overload
    def section(self, name: str, model: type[_S]) -> _S: ...

    def section(self, name: str, model: type[BaseModel] | None = None) -> BaseModel:
        """The settings section of the connector registered as ``name`` (its spec's model).

        ``model`` checks the type (connectors pass their own model class). :class:`ConfigError`
        when no such connector is registered.
        """
        extra = self.__pydantic_extra__ or {}
        value = extra.get(name)
        if value is None:
            known = ", ".join(sorted(extra)) or "none"
            raise ConfigError(f"no connector named {name!r} is registered (registered: {known})")
        if model is not None and not isinstance(value, model):
            raise TypeError(f"settings section {name!r} is a {type(value).__name__}, not {model.__name__}")
        return cast(BaseModel, value)

    def sections(self) -> dict[str, BaseModel]:
        """Every connector section by name."""
        extra = self.__pydantic_extra__ or {}
        return {k: v for k, v in sorted(extra.items()) if isinstance(v, BaseModel)}

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

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://", "amqp://", "amqps://")
        ):
            raise ValueError("must start with redis://, rediss://, unix://, amqp:// or amqps://")
        return value

    def resolved_mappings_dir(self) -> Path:
        """``SYNC_MAPPINGS_DIR``, else ``./mappings`` when it exists, else the packaged defaults."""
        if self.mappings_dir is not None:
            return self.mappings_dir
        local = Path("mappings")
        if (local / "canonical.yaml").is_file():
            return local
        return default_mappings_dir()


def url_password(value: str) -> str | None:
    """The password inside a URL's user info (``scheme://user:password@host``), else None."""
    if "://" not in value or "@" not in value:
        return None
    try:
        password = urlsplit(value).password
    except ValueError:
        return None
    return unquote(password) if password else None


def mask_url(value: str) -> str:
    """``value`` with the password of its user info replaced by ``***`` (other text unchanged)."""
    if url_password(value) is None:
        return value
    parts = urlsplit(value)
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{host}"))


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
            problems.append(f"{_env_name(loc)}: {err['msg']}" if loc else err["msg"])
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from exc


class SettingRow(NamedTuple):
    """One setting as ``sync-worker config`` shows it: variable, masked value, description."""

    name: str
    value: str
    description: str


def setting_rows(settings: Settings) -> list[SettingRow]:
    """Every setting, the core's then each connector's, with its value masked and its description.

    A :class:`~pydantic.SecretStr` shows as ``********``, a URL's password as ``***``; an unset value
    is empty. ``SYNC_MAPPINGS_DIR`` shows the directory in use.
    """
    rows: list[SettingRow] = []
    mappings_dir = _env_name(("mappings_dir",))

    def walk(model: BaseModel, prefix: tuple[str, ...]) -> None:
        for name, info in type(model).model_fields.items():
            value = getattr(model, name)
            loc = (*prefix, name)
            env = _env_name(loc)
            if isinstance(value, BaseModel):
                walk(value, loc)
                continue
            if env == mappings_dir:
                shown = str(settings.resolved_mappings_dir())
            elif isinstance(value, SecretStr):
                shown = "********"
            else:
                shown = "" if value is None else mask_url(str(value))
            rows.append(SettingRow(env, shown, info.description or ""))

    walk(settings, ())
    for name, section in settings.sections().items():
        walk(section, (name,))
    return rows


def describe_settings(settings: Settings) -> dict[str, str]:
    """The effective configuration as ``ENV_NAME -> value`` with every secret masked."""
    return {row.name: row.value for row in setting_rows(settings)}
