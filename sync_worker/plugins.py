"""The plug-in point: every system is a connector package that declares one :class:`ConnectorSpec`.

The core never names a system. A connector package exposes a spec object and registers it under the
``sync_worker.connectors`` entry-point group in its own ``pyproject.toml``::

    [project.entry-points."sync_worker.connectors"]
    zoho = "connectors.zoho:SPEC"

:func:`registry` discovers every registered spec once per process (Python's
:func:`importlib.metadata.entry_points`, the mechanism pytest and dramatiq plug-ins use), so a
separately installed package adds a system without a change to this repository. Tests may add
specs for the life of a test with :func:`registered`.

A spec carries what the core would otherwise hard-code: the settings model read from
``SYNC_<NAME>__*``, how to build the connector on the shared HTTP boundary and limiter, the streams
it polls and their cursor kinds, documented rate limits and the credential that keys the shared
limiter, the echo markers of the service's own writes, whether a full pull lists every live deal,
the mapping file it reads, the tie-break rank in conflicts, how to link to a deal in its UI, and a
sandbox factory.

Webhook verification, parsing and translation of inbox events into canonical records live on the
connector itself (:class:`sync_worker.connector.Connector`), pure where they can be.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import httpx
from pydantic import BaseModel, SecretStr

from sync_worker.canonical import RecordKind
from sync_worker.errors import ConfigError

if TYPE_CHECKING:
    from sync_worker.connector import Connector
    from sync_worker.mappings import Mappings
    from sync_worker.ratelimit import Limit, Observation, RedisRateLimiter
    from sync_worker.sandbox.common import Delivery, FaultConfig

__all__ = [
    "ENTRY_POINT_GROUP",
    "BuildContext",
    "ConnectorSpec",
    "CursorKind",
    "SandboxOptions",
    "SandboxServer",
    "StreamSpec",
    "deal_links",
    "registered",
    "registry",
    "spec_for",
]

ENTRY_POINT_GROUP: Final = "sync_worker.connectors"

_log = logging.getLogger(__name__)

CursorKind = Literal["time", "opaque"]


@dataclass(frozen=True)
class StreamSpec:
    """One stream a connector pulls.

    ``cursor`` "time": the stored cursor is a point in time and ``since(moment)`` gives the cursor
    value meaning "changed since ``moment``" (so ``sync --since`` applies); "opaque": ids or tokens,
    only resumable. ``full``: a pull from no cursor returns every live deal, so a deal missing from a
    complete full pull is flagged dropped. ``polled``: the scheduler polls it incrementally.
    """

    name: str
    cursor: CursorKind = "time"
    since: Callable[[datetime], str] | None = None
    full: bool = False
    polled: bool = True

    def __post_init__(self) -> None:
        if self.cursor == "time" and self.since is None:
            raise ValueError(f"stream {self.name!r}: a time cursor needs since()")


@dataclass(frozen=True)
class BuildContext:
    """What a spec's ``build`` gets: its own settings section, the whole settings, the current
    mappings (a callable: connectors translate with the mappings of the moment, hot reloads
    included), the shared limiter of its account (None: the connector's in-process default) and the
    clock."""

    section: Any
    settings: Any
    mappings: Callable[[], Mappings]
    limiter: RedisRateLimiter | None
    clock: Callable[[], datetime]


@dataclass(frozen=True)
class SandboxOptions:
    """How to start one connector's sandbox (see :class:`SandboxServer`)."""

    seed: int = 1
    deals: int = 200
    host: str = "127.0.0.1"
    time_scale: float = 1.0
    faults: FaultConfig | None = None
    webhook_base_url: str | None = None
    now: datetime | None = None


class SandboxServer(Protocol):
    """A live sandbox of one system, seeded, serving on a local port.

    - ``env()``: the ``SYNC_<NAME>__*`` variables that point the service at it (credentials included).
    - ``simulate_change()``: a person changes the stage of one seeded deal (or lead) as the provider's
      own UI would; the sandbox announces it by webhook to ``{webhook_base_url}/webhooks/<name>`` when
      it was started with a base URL. Returns the record's external id.
    - ``deliveries()``: the webhook attempts it made (:class:`~sync_worker.sandbox.common.Delivery`).
    - ``forge(delivery)``: the same delivery with its authentication broken (a wrong signature, a wrong
      password or token), as an attacker without the secret would send it.
    - ``set_faults(config)``: inject 5xx, 429s, latency and webhook drops from now on.
    - ``api_calls()`` / ``rate_limited()``: what the service asked of it, and how many 429s it got.
    """

    url: str
    state: Any

    def env(self) -> dict[str, str]: ...

    def simulate_change(self) -> str: ...

    def deliveries(self) -> list[Delivery]: ...

    def forge(self, delivery: Delivery) -> Delivery: ...

    def set_faults(self, config: FaultConfig) -> None: ...

    def api_calls(self) -> int: ...

    def rate_limited(self) -> int: ...

    def stop(self) -> None: ...


def _no_markers(section: Any) -> frozenset[str]:
    return frozenset()


@dataclass(frozen=True)
class ConnectorSpec:
    """Everything the core knows about one system; see the module docstring.

    - ``name``: lower-case, the ``SYNC_<NAME>__*`` prefix, the ``/webhooks/<name>`` route, the
      ``<name>.yaml`` mapping file and the source name in the store.
    - ``settings_model``: a pydantic model; every credential a :class:`~pydantic.SecretStr`.
    - ``enabled(section)``: True when its credentials are set.
    - ``build(ctx)``: the connector, on :class:`~sync_worker.http.ApiClient` with ``ctx.limiter``.
    - ``limits(section)``: the documented request budgets by limiter bucket.
    - ``account(section)``: ``(base URL, credential)``, hashed into the shared limiter's key;
      ``credential_env`` names the variables to set when the credential is missing.
    - ``read_limits``: how to read remaining-budget headers (default: ``X-RateLimit-*``).
    - ``echo_markers(section)``: the ``change_source`` values that mean the service wrote it.
    - ``record_kind``: "deal" for a CRM or board, "lead" for an outreach tool.
    - ``webhooks``: the receiver serves ``POST /webhooks/<name>``.
    - ``tie_rank``: lower wins a conflict whose source timestamps are equal (then the name).
    - ``deal_url(section, external_id)``: a link to the record in the system's own UI.
    - ``sandbox(options)``: start a seeded local server that follows the provider's docs.
    - ``webhook_ack(accepted)``: the ``(content type, body)`` of the 2xx answer once the events are
      durably stored, for providers that expect a particular one (a SOAP ``Ack``); default JSON.
    - ``webhook_fault(status, message)``: the ``(content type, body)`` of a 4xx/5xx answer, in the
      provider's own error format (a SOAP fault); default the receiver's JSON error.
    - ``answers_head``: the receiver answers ``HEAD /webhooks/<name>`` with 200 (a provider that
      checks the callback URL before it registers a webhook, as Trello does).
    """

    name: str
    title: str
    settings_model: type[BaseModel]
    enabled: Callable[[Any], bool]
    build: Callable[[BuildContext], Connector]
    streams: tuple[StreamSpec, ...]
    limits: Callable[[Any], Mapping[str, Limit]]
    account: Callable[[Any], tuple[str, SecretStr | None]]
    credential_env: str
    read_limits: Callable[[httpx.Headers, float, float], Observation] | None = None
    echo_markers: Callable[[Any], frozenset[str]] = _no_markers
    record_kind: RecordKind = "deal"
    webhooks: bool = True
    tie_rank: int = 100
    deal_url: Callable[[Any, str], str | None] | None = None
    sandbox: Callable[[SandboxOptions], SandboxServer] | None = None
    webhook_ack: Callable[[int], tuple[str, bytes]] | None = None
    webhook_fault: Callable[[int, str], tuple[str, bytes]] | None = None
    answers_head: bool = False
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"connector name {self.name!r} must be a lower-case identifier")

    @property
    def mapping_file(self) -> str:
        return f"{self.name}.yaml"

    @property
    def env_prefix(self) -> str:
        return f"SYNC_{self.name.upper()}__"

    def stream(self, name: str) -> StreamSpec:
        for stream in self.streams:
            if stream.name == name:
                return stream
        known = ", ".join(s.name for s in self.streams)
        raise ConfigError(f"{self.name} has no stream {name!r} (streams: {known})")

    @property
    def polled_streams(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.streams if s.polled)

    @property
    def full_stream(self) -> str | None:
        """The stream whose complete full pull lists every live deal, if the system has one."""
        return next((s.name for s in self.streams if s.full), None)


_lock = threading.Lock()
_discovered: dict[str, ConnectorSpec] | None = None
_extra: dict[str, ConnectorSpec] = {}


def _discover() -> dict[str, ConnectorSpec]:
    found: dict[str, ConnectorSpec] = {}
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        try:
            spec = point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not take the service down
            _log.error("connector plug-in %s failed to load: %s: %s", point.name, type(exc).__name__, exc)
            continue
        if not isinstance(spec, ConnectorSpec):
            _log.error("connector plug-in %s is not a ConnectorSpec (%s)", point.name, type(spec).__name__)
            continue
        if spec.name in found:
            _log.error("connector plug-in %s: name %r registered twice", point.name, spec.name)
            continue
        found[spec.name] = spec
    return found


_merged: Mapping[str, ConnectorSpec] | None = None


def registry() -> Mapping[str, ConnectorSpec]:
    """Every registered connector spec by name, in name order (discovered once per process).

    A read-only view, cheap to call on hot paths (it is rebuilt only when a test registers more).
    """
    global _discovered, _merged
    merged = _merged
    if merged is not None:
        return merged
    with _lock:
        if _discovered is None:
            _discovered = _discover()
        _merged = MappingProxyType(dict(sorted({**_discovered, **_extra}.items())))
        return _merged


def spec_for(name: str) -> ConnectorSpec:
    """The spec registered as ``name``; :class:`ConfigError` listing the known ones otherwise."""
    specs = registry()
    try:
        return specs[name]
    except KeyError:
        known = ", ".join(specs) or "none"
        raise ConfigError(f"no connector named {name!r} is registered (registered: {known})") from None


def deal_links(settings: Any) -> dict[str, Callable[[str], str | None]]:
    """Per registered system with a ``deal_url``: external id -> the deal's URL in its own UI."""
    links: dict[str, Callable[[str], str | None]] = {}
    for name, spec in registry().items():
        if spec.deal_url is None:
            continue
        section = settings.section(name)
        link = spec.deal_url

        def url(
            external_id: str, link: Callable[[Any, str], str | None] = link, section: Any = section
        ) -> str | None:
            return link(section, external_id)

        links[name] = url
    return links


@contextmanager
def registered(*specs: ConnectorSpec) -> Iterator[None]:
    """Register ``specs`` for the duration of the block (tests), as an entry point would."""
    global _merged
    with _lock:
        before = dict(_extra)
        _extra.update({spec.name: spec for spec in specs})
        _merged = None
    try:
        yield
    finally:
        with _lock:
            _extra.clear()
            _extra.update(before)
            _merged = None
