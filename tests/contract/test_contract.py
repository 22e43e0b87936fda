"""The contract every registered connector passes, run against its own sandbox.

Parametrised over :func:`sync_worker.plugins.registry` (as singer-sdk's ``singer_sdk.testing`` is
over a tap's streams): a connector gets these tests by being registered. Each builds the connector
the way the runtime does (its spec's ``build`` with the settings its sandbox's ``env()`` gives) and
checks what the core relies on:

- it lists its stages;
- a pull runs to its last page, and resuming from the cursor repeats no record older than it;
- a batch of stage updates is applied, one result per update in order, and the next pull shows it;
- a genuine webhook delivery (the sandbox's own, after a person's change) verifies and parses, and a
  forged one is refused with :class:`SignatureError`;
- a malformed body is a :class:`PayloadError` (or, for a source that keeps unrecognised shapes, an
  unhandled event that says so);
- every stage of its default mapping translates both ways, and every stage the account lists in a
  mapped pipeline has a canonical counterpart;
- 5xx and 429 answers come out of the shared HTTP boundary as :class:`TransientError` or are retried.

Every registered spec, sandboxed or not, documents its own settings: each field of its settings model
has a ``Field(description=...)``, which ``sync-worker config --describe`` and the tables in
``connectors/README.md`` show.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sync_worker.canonical import (
    UNRECOGNISED_ACTION,
    CanonicalRecord,
    CanonicalUpdate,
    SourceStage,
    StageKey,
    StageKind,
    UnmappedStage,
)
from sync_worker.connector import Connector, WebhookRequest
from sync_worker.errors import PayloadError, SignatureError, TransientError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.plugins import BuildContext, ConnectorSpec, SandboxOptions, SandboxServer, registry
from sync_worker.sandbox.common import Delivery, FaultConfig
from sync_worker.settings import Settings, default_mappings_dir

pytestmark = pytest.mark.slow

_SANDBOXED = sorted(name for name, spec in registry().items() if spec.sandbox is not None)
# Webhooks go to a closed port: the contract reads what the sandbox tried to deliver.
_NOWHERE = "http://127.0.0.1:9"
_OPTIONS = SandboxOptions(seed=3, deals=24, time_scale=0.001, webhook_base_url=_NOWHERE)


@dataclass
class Subject:
    spec: ConnectorSpec
    sandbox: SandboxServer
    connector: Connector
    mappings: Mappings


def settings_for(spec: ConnectorSpec, env: dict[str, str]) -> Settings:
    """Settings holding ``spec``'s section as its sandbox's ``SYNC_<NAME>__*`` variables give it."""
    section: dict[str, Any] = {}
    for key, value in env.items():
        if key.startswith(spec.env_prefix):
            section[key[len(spec.env_prefix) :].lower()] = value
    return Settings(_env_file=None, **{spec.name: section})  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(default_mappings_dir())


@pytest.fixture(scope="module", params=_SANDBOXED)
def subject(request: pytest.FixtureRequest, mappings: Mappings) -> Iterator[Subject]:
    spec = registry()[request.param]
    assert spec.sandbox is not None
    sandbox = spec.sandbox(_OPTIONS)
    try:
        settings = settings_for(spec, sandbox.env())
        section = settings.section(spec.name)
        assert spec.enabled(section), f"{spec.name}: the sandbox's env() does not enable the connector"
        ctx = BuildContext(
            section=section,
            settings=settings,
            mappings=lambda: mappings,
            limiter=None,
            clock=lambda: datetime.now(UTC),
        )
        connector = spec.build(ctx)
        try:
            yield Subject(spec, sandbox, connector, mappings)
        finally:
            connector.close()
    finally:
        sandbox.stop()


def _fields(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, FieldInfo]]:
    for name, info in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _fields(annotation, f"{env}__")
        else:
            yield env, info


@pytest.mark.parametrize("name", sorted(registry()))
def test_every_setting_has_a_description(name: str) -> None:
    spec = registry()[name]
    fields = list(_fields(spec.settings_model, spec.env_prefix))
    assert fields, f"{name}: its settings model has no fields"
    undescribed = [env for env, info in fields if not (info.description or "").strip()]
    assert undescribed == [], f"{name}: give these settings a Field(description=...): {undescribed}"


def _pull(connector: Connector, stream: str, cursor: str | None) -> tuple[list[CanonicalRecord], str | None]:
    records: list[CanonicalRecord] = []
    last = cursor
    done = False
    for page in connector.pull_changes(stream, cursor):
        records.extend(page.records)
        if page.cursor is not None:
            last = page.cursor
        done = page.done
    assert done, f"{stream}: the last page did not say done"
    return records, last


def test_lists_its_stages(subject: Subject) -> None:
    stages = subject.connector.list_stages()
    assert stages, f"{subject.spec.name}: no stages listed"
    assert all(stage.source == subject.spec.name for stage in stages)


@pytest.mark.parametrize("which", ["polled"])
def test_pulls_to_the_end_then_resumes_from_the_cursor(subject: Subject, which: str) -> None:
    for stream in subject.spec.polled_streams:
        first, cursor = _pull(subject.connector, stream, None)
        assert all(r.source == subject.spec.name for r in first)
        if cursor is None or cursor == "":
            continue  # a sweep that finished starts over: nothing to resume
        again, _ = _pull(subject.connector, stream, cursor)
        # An inclusive time cursor may re-read its own instant (a change within the same second must
        # not be missed, and the engine absorbs a repeat as stale); nothing older comes back.
        newest = max((r.updated_at for r in first), default=None)
        seen = {(r.external_id, r.updated_at) for r in first}
        repeated = [
            r.external_id for r in again if (r.external_id, r.updated_at) in seen and r.updated_at != newest
        ]
        assert not repeated, f"{stream}: resuming from the cursor repeated unchanged {repeated[:5]}"


def _other_stage(subject: Subject, record: CanonicalRecord) -> StageKey | None:
    model = subject.mappings.model
    for stage in model.ordered():
        if stage.kind is not StageKind.OPEN or stage.key == record.stage:
            continue
        for pipeline in (record.pipeline_id, None):
            target = subject.mappings.to_target(subject.spec.name, stage.key, pipeline=pipeline)
            if target is not None and target.stage is not None:
                return stage.key
    return None


def test_applied_updates_show_on_the_next_pull(subject: Subject) -> None:
    spec = subject.spec
    stream = spec.full_stream
    if spec.record_kind != "deal" or stream is None:
        pytest.skip(f"{spec.name} holds {spec.record_kind}s without a full deal stream")
    records, _ = _pull(subject.connector, stream, None)
    chosen = [
        (r, key) for r in records if r.status == "open" and r.stage and (key := _other_stage(subject, r))
    ]
    assert chosen, f"{spec.name}: no open deal in a mapped pipeline to move"
    batch = chosen[:2]
    updates = [
        CanonicalUpdate(
            target=spec.name,
            idempotency_key=f"contract-{uuid.uuid4().hex}",
            origin="contract",
            external_id=record.external_id,
            stage=key,
        )
        for record, key in batch
    ]
    results = subject.connector.apply_updates(updates)
    assert [r.idempotency_key for r in results] == [u.idempotency_key for u in updates]
    assert all(r.ok for r in results), [r.error for r in results]
    time.sleep(1.1)  # providers with second-precision times: the change is after the cursor
    after, _ = _pull(subject.connector, stream, None)
    stages = {r.external_id: r.stage for r in after}
    for record, key in batch:
        assert stages.get(record.external_id) == key, f"{spec.name} deal {record.external_id}"


def _as_request(delivery: Delivery) -> WebhookRequest:
    headers = {name.lower(): value for name, value in delivery.headers.items()}
    query = dict(parse_qsl(urlsplit(delivery.url).query))
    return WebhookRequest("POST", delivery.url, headers, delivery.body, query)


def _first_delivery(sandbox: SandboxServer, before: int, timeout: float = 15.0) -> Delivery:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sandbox.deliveries()
        if len(found) > before:
            return found[before]
        time.sleep(0.05)
    raise AssertionError("the sandbox delivered no webhook for a person's change")


def test_a_genuine_webhook_is_accepted_and_a_forged_one_refused(subject: Subject) -> None:
    if not subject.spec.webhooks:
        pytest.skip(f"{subject.spec.name} takes no webhooks")
    before = len(subject.sandbox.deliveries())
    subject.sandbox.simulate_change()
    delivery = _first_delivery(subject.sandbox, before)
    genuine = _as_request(delivery)
    subject.connector.verify_webhook(genuine)
    events = subject.connector.parse_webhook(genuine.body)
    assert events and all(e.source == subject.spec.name for e in events)
    with pytest.raises(SignatureError):
        subject.connector.verify_webhook(_as_request(subject.sandbox.forge(delivery)))


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe\x00garbage", b""])
def test_a_malformed_body_is_a_payload_error(subject: Subject, body: bytes) -> None:
    if not subject.spec.webhooks:
        pytest.skip(f"{subject.spec.name} takes no webhooks")
    try:
        events = subject.connector.parse_webhook(body)
    except PayloadError:
        return
    # A source that keeps what it cannot read says so on every event, and never syncs it.
    assert events and all(not e.handled and e.action == UNRECOGNISED_ACTION for e in events)


def test_its_default_mapping_translates_both_ways(subject: Subject) -> None:
    name = subject.spec.name
    mappings = subject.mappings
    assert name in mappings.sources(), f"no default mapping file {subject.spec.mapping_file}"
    covered = 0
    for stage in mappings.model.ordered():
        target = mappings.to_target(name, stage.key)
        if target is None:
            continue
        covered += 1
        if target.stage is None:
            back = mappings.to_canonical(name, pipeline=None, stage=None, status=target.status)
        elif target.match_by == "id":
            back = mappings.to_canonical(name, pipeline=target.pipeline, stage=target.stage)
        else:
            back = mappings.to_canonical(
                name, pipeline=None, stage=None, pipeline_name=target.pipeline, stage_name=target.stage
            )
        assert back == stage.key, f"{name}: {stage.key} is written as {target} but reads back as {back}"
    assert covered, f"{name}: the default mapping writes no canonical stage"
    for listed in subject.connector.list_stages():
        resolved = mappings.to_canonical(
            name,
            pipeline=listed.pipeline_id,
            stage=listed.stage_id,
            pipeline_name=listed.pipeline_label,
            stage_name=listed.stage_label,
        )
        if isinstance(resolved, UnmappedStage) and not _pipeline_mapped(mappings, name, listed):
            continue  # a pipeline the mapping leaves out on purpose: reported, not synced
        assert isinstance(resolved, StageKey), (
            f"{name}: stock stage {listed.stage_label!r} has no counterpart"
        )


def _pipeline_mapped(mappings: Mappings, name: str, listed: SourceStage) -> bool:
    source = mappings.index.get(name)
    if source is None or not source.pipelines:
        return True
    return source.find_pipeline(listed.pipeline_id, listed.pipeline_label) is not None


def _first_page(subject: Subject) -> None:
    next(iter(subject.connector.pull_changes(subject.spec.polled_streams[0], None)))


def test_5xx_and_429_go_through_the_shared_boundary(subject: Subject) -> None:
    sandbox = subject.sandbox
    try:
        sandbox.set_faults(FaultConfig(error_rate=1.0, seed=1))
        with pytest.raises(TransientError):
            _first_page(subject)
        sandbox.set_faults(FaultConfig(burst_429_rate=1.0, seed=5))
        started = time.monotonic()
        with pytest.raises(TransientError) as raised:
            _first_page(subject)
        # A rate limit, however the provider says it (429, or Salesforce's 403 REQUEST_LIMIT_EXCEEDED),
        # is transient and says when to come back.
        assert raised.value.status == 429 or raised.value.retry_after is not None, raised.value
        assert time.monotonic() - started < 60
    finally:
        sandbox.set_faults(FaultConfig())
    assert subject.connector.list_stages()
