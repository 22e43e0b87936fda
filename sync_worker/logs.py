"""Logging set-up: text or JSON lines, with secrets scrubbed from every record.

:class:`RedactingFilter` replaces every configured secret value and anything that looks like a
credential in a URL or header (``token=``, ``apikey=``, ``Authorization: ...``) with ``***`` before a
record is formatted, so neither our own messages nor a library's (uvicorn's access log prints request
lines with their query strings) can carry one out.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, SecretStr

from sync_worker.settings import Settings, url_password

__all__ = ["JsonFormatter", "RedactingFilter", "TextFormatter", "configure_logging", "secret_values"]

_KEYS = r"(?:api_?)?token|apikey|api_key|access_token|refresh_token|client_secret|password|secret"
_HEADERS = r"authorization|x-api-token|x-sync-token|x-hubspot-signature(?:-v3)?"
_PATTERNS = (
    re.compile(rf"(?i)\b({_KEYS})=([^&\s\"']+)"),
    re.compile(rf"(?i)\b({_HEADERS})(\"?\s*[:=]\s*\"?)([^\"\s,}}]+(?: [^\"\s,}}]+)?)"),
)


def secret_values(settings: Settings) -> list[str]:
    """Every secret value in the settings, longest first (so overlapping ones mask fully)."""
    found: list[str] = []

    def walk(model: BaseModel) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                walk(value)
            elif isinstance(value, SecretStr):
                raw = value.get_secret_value()
                if len(raw) >= 4:
                    found.append(raw)
            elif isinstance(value, str):
                password = url_password(value)
                if password is not None and len(password) >= 4:
                    found.append(password)

    walk(settings)
    for section in settings.sections().values():
        walk(section)
    return sorted(set(found), key=len, reverse=True)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    text = _PATTERNS[0].sub(lambda m: f"{m.group(1)}=***", text)
    return _PATTERNS[1].sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message and arguments with secrets masked."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = _scrub(message, self.secrets)
        record.args = None
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, _scrub(value, self.secrets))
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = _scrub(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        return True


# LogRecord's own attributes, and what only restates the message for a terminal (uvicorn's
# ``color_message`` carries ANSI escape codes).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


def _extras(record: logging.LogRecord) -> dict[str, str | int | float | bool | None]:
    """The ``extra`` fields of a record, as JSON scalars."""
    return {
        key: value if isinstance(value, str | int | float | bool | None) else str(value)
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    }


def _text_value(value: str | int | float | bool | None) -> str:
    if isinstance(value, str):
        return value if value and not any(c.isspace() or c in '"=' for c in value) else json.dumps(value)
    return json.dumps(value)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``: the line a person reads, with every ``extra``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if not extras:
            return line
        head, sep, tail = line.partition("\n")  # a traceback stays below the fields
        fields = " ".join(f"{key}={_text_value(value)}" for key, value in sorted(extras.items()))
        return f"{head} {fields}{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, plus any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(_extras(record))
        if record.exc_text:
            payload["exception"] = record.exc_text
        return json.dumps(payload, ensure_ascii=False)


def configure_logging(settings: Settings, *, stream: Any = None) -> logging.Handler:
    """Install one handler on the root logger with the redacting filter; returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter(secret_values(settings)))
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # httpx logs every request line at INFO, query string included.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
