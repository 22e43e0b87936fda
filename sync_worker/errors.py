"""The project's one error tree, grouped by what the caller should do.

::

    SyncWorkerError                 root: every error the service raises on purpose
    ├── ConfigError                 bad settings or usage; the CLI exits 2
    ├── MappingError                a YAML mapping is wrong; carries file, line and key
    ├── TransientError              try again later; carries ``retry_after`` (seconds or None)
    ├── PermanentError              retrying will not help; goes to the dead letters
    │   └── AuthError               credentials rejected (401/403) or missing
    ├── StoreUnavailableError       the state store cannot be reached (receiver answers 503)
    └── WebhookError                a webhook request is refused; carries the HTTP status
        ├── SignatureError          401: bad or missing signature or credentials
        ├── PayloadError            400: malformed body or wrong shape
        └── PayloadTooLargeError    413: body over the configured limit

Messages never contain secrets: callers pass redacted values only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AuthError",
    "ConfigError",
    "MappingError",
    "MappingIssue",
    "PayloadError",
    "PayloadTooLargeError",
    "PermanentError",
    "SignatureError",
    "StoreUnavailableError",
    "SyncWorkerError",
    "TransientError",
    "WebhookError",
]


class SyncWorkerError(Exception):
    """Root of every error the service raises on purpose."""


class ConfigError(SyncWorkerError):
    """Bad configuration or usage. The CLI maps it to exit code 2."""


@dataclass(frozen=True)
class MappingIssue:
    """One problem in one mapping file: where it is and what is wrong."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key}: {self.message}"


class MappingError(SyncWorkerError):
    """One or more problems in the YAML mappings, all reported at once."""

    def __init__(self, issues: list[MappingIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    @property
    def file(self) -> str:
        return self.issues[0].file

    @property
    def line(self) -> int | None:
        return self.issues[0].line

    @property
    def key(self) -> str:
        return self.issues[0].key


class TransientError(SyncWorkerError):
    """A failure that may succeed later: 429, 5xx, timeouts, a broker blip.

    ``retry_after`` is the number of seconds the other side asked us to wait, when it said.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class PermanentError(SyncWorkerError):
    """A failure that will not go away by retrying: a 4xx, a record the target refuses."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthError(PermanentError):
    """Credentials missing or refused (401/403)."""


class StoreUnavailableError(SyncWorkerError):
    """The state store cannot be reached; nothing was written."""


class WebhookError(SyncWorkerError):
    """A webhook request is refused; ``status`` is the HTTP status to answer with."""

    status = 400


class SignatureError(WebhookError):
    """Bad or missing signature or credentials: 401, nothing stored."""

    status = 401


class PayloadError(WebhookError):
    """Malformed JSON or a body of the wrong shape: 400 with this message."""

    status = 400


class PayloadTooLargeError(WebhookError):
    """The body is over the configured limit: 413."""

    status = 413
