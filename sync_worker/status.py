"""``sync-worker status`` and ``GET /status``: what the service did last, and what it will do next.

Per source and stream: the last poll, its cursor, the records of the last run and in total, the
last success, the last error and the next run (the last run plus the poll interval; "due" before
the first). Per target: the outbox (pending, failed, dead), the last push, its failures. Then the
dead letters not replayed, the open leak flags per rule and the last scan, the pauses, and whether
the mappings on disk are valid (and, in the receiver, loaded). Everything comes from the store
(:meth:`~sync_worker.store.SyncStore.list_activity` is written by the workers), so it is the same
whichever machine asks; the request budgets come from the shared limiter in Redis
(:meth:`~sync_worker.ratelimit.RedisRateLimiter.budgets`): per enabled source and bucket, what the
workers used in the current window and, where the provider reports it (Zoho's
``X-API-CREDITS-REMAINING``, Salesforce's ``Sforce-Limit-Info``), what it says is left.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import redis

from sync_worker.errors import ConfigError, TransientError
from sync_worker.ratelimit import Budget
from sync_worker.settings import Settings
from sync_worker.store import Activity, HeldGroup, SyncStore

__all__ = ["MappingsState", "ServiceStatus", "StreamStatus", "TargetStatus", "build_status", "render_status"]


@dataclass(frozen=True)
class StreamStatus:
    source: str
    stream: str
    paused: bool
    cursor: str | None
    last_poll: datetime | None
    last_success: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    records_last: int
    records_total: int
    failures: int
    next_run: datetime | None
    """None: due now (never ran, or paused sources wait for ``resume``)."""


@dataclass(frozen=True)
class TargetStatus:
    target: str
    paused: bool
    pending: int
    failed: int
    dead: int
    last_push: datetime | None
    last_success: datetime | None
    last_error: str | None
    failures: int


@dataclass(frozen=True)
class MappingsState:
    directory: str
    valid: bool
    loaded: bool | None
    """What the asking process runs on (the receiver); None: not known here (the CLI)."""
    errors: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceStatus:
    generated_at: datetime
    streams: tuple[StreamStatus, ...]
    targets: tuple[TargetStatus, ...]
    dead_letters: int
    open_flags: dict[str, int]
    last_scan: datetime | None
    paused: tuple[str, ...]
    mappings: MappingsState
    routes_paused: tuple[str, ...] = ()
    unmapped_deals: dict[str, int] | None = None
    """Open deals per source whose stage no mapping covers (out of the funnel)."""
    budgets: dict[str, tuple[Budget, ...]] | None = None
    """Per source, its request budgets (None: not asked); ``budgets_error`` when Redis failed."""
    budgets_error: str | None = None
    held_stages: tuple[HeldGroup, ...] = ()
    """Records held on an unmapped stage, per source, pipeline and stage (``sync-worker held list``)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601)."""
        out: dict[str, Any] = _jsonable(asdict(self))
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def _mappings_state(settings: Settings, loaded: bool | None) -> MappingsState:
    from sync_worker.mappings import validate_directory

    directory = settings.resolved_mappings_dir()
    result, errors, _warnings = validate_directory(directory)
    routes = tuple(route.name for route in result.routes) if result is not None else ()
    return MappingsState(
        directory=str(directory),
        valid=result is not None and not errors,
        loaded=loaded,
        errors=tuple(str(error) for error in errors),
        routes=routes,
    )


def source_budgets(
    settings: Settings, client: redis.Redis
) -> tuple[dict[str, tuple[Budget, ...]], str | None]:
    """Each enabled source's budgets from the shared limiter; an error line instead when Redis fails."""
    from sync_worker.ratelimit import limiter_for
    from sync_worker.runtime import enabled_streams

    out: dict[str, tuple[Budget, ...]] = {}
    for source in sorted(enabled_streams(settings)):
        try:
            out[source] = tuple(limiter_for(source, settings, client).budgets())
        except ConfigError:
            continue  # no credential: no account, no budget
        except TransientError as exc:
            return out, f"request budgets unavailable: {exc}"
    return out, None


def build_status(
    settings: Settings,
    store: SyncStore,
    *,
    now: datetime,
    mappings_loaded: bool | None = None,
    redis_client: redis.Redis | None = None,
) -> ServiceStatus:
    """The whole status at ``now``; raises :class:`~sync_worker.errors.StoreUnavailableError`.

    With ``redis_client``, the request budgets too (a Redis failure is reported, not raised).
    """
    from sync_worker.leaks.scan import last_scan_at
    from sync_worker.runtime import enabled_streams

    runs: dict[tuple[str, str], Activity] = {(a.kind, a.name): a for a in store.list_activity()}
    pauses = store.pauses()
    paused_sources = {p.name for p in pauses if p.scope == "source"}
    interval = timedelta(seconds=settings.poll_interval_seconds)
    streams = []
    for source, names in sorted(enabled_streams(settings).items()):
        for stream in names:
            run = runs.get(("poll", f"{source}/{stream}"))
            streams.append(
                StreamStatus(
                    source=source,
                    stream=stream,
                    paused=source in paused_sources,
                    cursor=store.get_cursor(source, stream),
                    last_poll=run.last_run_at if run else None,
                    last_success=run.last_success_at if run else None,
                    last_error_at=run.last_error_at if run else None,
                    last_error=run.last_error if run else None,
                    records_last=run.last_count if run else 0,
                    records_total=run.total_count if run else 0,
                    failures=run.failures if run else 0,
                    next_run=run.last_run_at + interval if run and source not in paused_sources else None,
                )
            )
    outbox = store.outbox_counts()
    pushed = {name for kind, name in runs if kind == "push"}
    targets = []
    for target in sorted(set(outbox) | pushed | set(enabled_streams(settings))):
        counts = outbox.get(target, {})
        run = runs.get(("push", target))
        targets.append(
            TargetStatus(
                target=target,
                paused=target in paused_sources,
                pending=counts.get("pending", 0),
                failed=counts.get("failed", 0),
                dead=counts.get("dead", 0),
                last_push=run.last_run_at if run else None,
                last_success=run.last_success_at if run else None,
                last_error=run.last_error if run else None,
                failures=run.failures if run else 0,
            )
        )
    budgets, budgets_error = source_budgets(settings, redis_client) if redis_client else (None, None)
    return ServiceStatus(
        generated_at=now,
        streams=tuple(streams),
        targets=tuple(targets),
        dead_letters=store.open_dead_letters(),
        open_flags=store.open_flags_by_rule(),
        last_scan=last_scan_at(store),
        paused=tuple(sorted(f"{p.scope} {p.name}" for p in pauses)),
        mappings=_mappings_state(settings, mappings_loaded),
        routes_paused=tuple(sorted(p.name for p in pauses if p.scope == "route")),
        unmapped_deals=store.unmapped_deals(),
        budgets=budgets,
        budgets_error=budgets_error,
        held_stages=tuple(store.held_groups()),
    )


def _budget_lines(status: ServiceStatus, now: datetime) -> list[str]:
    if status.budgets is None:
        return []
    lines = ["request budgets (used in the current window, by the service's shared count):"]
    for source, budgets in sorted(status.budgets.items()):
        for b in budgets:
            line = (
                f"  {source} {b.bucket}: {b.used:,} of {b.limit:,} per {_span(int(b.window_seconds))},"
                f" {b.left:,} left"
            )
            if b.reported_remaining is not None and b.reported_at is not None:
                said = datetime.fromtimestamp(b.reported_at, tz=now.tzinfo)
                line += f"; {source} reported {b.reported_remaining:,} left {_when(said, now)}"
            lines.append(line)
    if status.budgets_error:
        lines.append(f"  {status.budgets_error}")
    return lines


def _when(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "never"
    seconds = int((now - value).total_seconds())
    if seconds < 0:
        return f"in {_span(-seconds)}"
    return f"{_span(seconds)} ago"


def _span(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86_400} d"


def render_status(status: ServiceStatus) -> str:
    """The status as plain text for a terminal."""
    now = status.generated_at
    lines = [f"sync-worker status at {now.isoformat(timespec='seconds')}", "", "sources:"]
    if not status.streams:
        lines.append("  (no source has credentials set)")
    for s in status.streams:
        state = (
            "PAUSED"
            if s.paused
            else ("failing" if s.last_error_at and s.last_error_at == s.last_poll else "ok")
        )
        nxt = (
            "paused"
            if s.paused
            else ("due now" if s.next_run is None or s.next_run <= now else _when(s.next_run, now))
        )
        lines.append(
            f"  {s.source}/{s.stream}: {state}; last poll {_when(s.last_poll, now)}, last success"
            f" {_when(s.last_success, now)}, {s.records_last} records (total {s.records_total}),"
            f" cursor {s.cursor or '-'}, next {nxt}"
        )
        if s.last_error:
            lines.append(f"    last error {_when(s.last_error_at, now)}: {s.last_error}")
    lines += ["", "targets:"]
    for t in status.targets:
        state = "PAUSED" if t.paused else "ok"
        lines.append(
            f"  {t.target}: {state}; outbox pending {t.pending}, failed {t.failed}, dead {t.dead};"
            f" last push {_when(t.last_push, now)}, failures {t.failures}"
        )
        if t.last_error:
            lines.append(f"    last error: {t.last_error}")
    flags = ", ".join(f"{rule} {n}" for rule, n in sorted(status.open_flags.items())) or "none"
    lines += [
        "",
        f"dead letters: {status.dead_letters}"
        + ("  (see: sync-worker dlq list)" if status.dead_letters else ""),
        f"open leak flags: {flags}; last scan {_when(status.last_scan, now)}",
        f"paused: {', '.join(status.paused) or 'nothing'}",
    ]
    unmapped = ", ".join(f"{source} {n}" for source, n in sorted((status.unmapped_deals or {}).items()))
    if unmapped:
        lines.append(f"deals with an unmapped stage: {unmapped}  (see: sync-worker mappings check)")
    lines += _budget_lines(status, now)
    held = sum(group.records for group in status.held_stages)
    if held:
        lines.append(f"held stages (no mapping covers them): {held}  (see: sync-worker held list)")
        lines += [f"  {g.source} {g.label}: {g.records}" for g in status.held_stages]
    m = status.mappings
    loaded = "" if m.loaded is None else ("; loaded" if m.loaded else "; NOT loaded")
    lines.append(
        f"mappings: {m.directory}: {'valid' if m.valid else 'INVALID'}{loaded}; {len(m.routes)} routes"
    )
    lines += [f"  {error}" for error in m.errors]
    return "\n".join(lines) + "\n"
