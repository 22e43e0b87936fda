"""End to end: a Salesforce Outbound Message reaches the HubSpot twin, acknowledged only once stored.

The Salesforce sandbox posts its SOAP Outbound Messages to the real receiver, whose store is
PostgreSQL behind a TCP proxy the test can kill; the HubSpot sandbox is the target. A route
``salesforce -> hubspot`` (created or stage change, create when no link, stage mirrored) is added
to the shipped mappings. The worker half (normalise, store, route, push) is the service the actors
call. When the database dies in the middle of a delivery, Salesforce gets a SOAP fault and no Ack,
retries as it does, and the retry that finds the database back is stored once and synced.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connectors.salesforce.sandbox import SalesforceSandbox, start_sandbox
from sync_worker.broker import build_stub_broker
from sync_worker.canonical import WebhookEvent
from sync_worker.plugins import SandboxOptions, SandboxServer, spec_for
from sync_worker.receiver import create_app
from sync_worker.runtime import Runtime, build_runtime
from sync_worker.sandbox.common import ServerHandle, serve_in_thread
from sync_worker.store import upgrade_database
from sync_worker.store.models import AcceptResult
from tests.conftest import REDIS_SERVER, service_unavailable
from tests.e2e.conftest import settings_from_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
ROUTE = """
  - name: salesforce-to-hubspot
    from: salesforce
    to: hubspot
    when: [created, stage_change]
    match: [link]
    create: true
    stage: mirror
    fields: [title, amount]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresProxy:
    """A TCP proxy to PostgreSQL: :meth:`kill` is the database dying (every connection cut, nothing
    listening), :meth:`start` it coming back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(32)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", 5432))
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def kill(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone leaves it listening.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            doomed, self._open = self._open, []
        for sock in doomed:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class MidDeliveryKill:
    """The receiver's store; when armed, the database dies as a delivery is being stored."""

    def __init__(self, store: Any, proxy: PostgresProxy) -> None:
        self._store = store
        self._proxy = proxy
        self.armed = False

    def accept_events(self, source: str, events: list[WebhookEvent]) -> AcceptResult:
        if self.armed:
            self.armed = False
            self._proxy.kill()
        result: AcceptResult = self._store.accept_events(source, events)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def database() -> Iterator[str]:
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        service_unavailable(f"PostgreSQL at 127.0.0.1:5432 does not answer: {exc}")
    name = f"sf_e2e_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class World:
    def __init__(self, tmp: Path, database: str) -> None:
        self.proxy = PostgresProxy()
        self.proxy.start()
        mappings = tmp / "mappings"
        shutil.copytree(REPO / "mappings", mappings)
        routes = mappings / "routes.yaml"
        routes.write_text(routes.read_text() + ROUTE)
        port = free_port()
        options = SandboxOptions(
            seed=4, deals=12, time_scale=0.01, webhook_base_url=f"http://127.0.0.1:{port}"
        )
        self.hubspot: SandboxServer = spec_for("hubspot").sandbox(SandboxOptions(seed=4, deals=8))  # type: ignore[misc]
        self.salesforce: SalesforceSandbox = start_sandbox(options)
        url = f"postgresql://postgres@127.0.0.1:{self.proxy.port}/{database}"
        upgrade_database(url)
        env = {
            **self.hubspot.env(),
            **self.salesforce.env(),
            "SYNC_DATABASE_URL": url,
            "SYNC_REDIS_URL": f"{REDIS_SERVER}/13",
            "SYNC_MAPPINGS_DIR": str(mappings),
        }
        self.settings = settings_from_env(env)
        self.runtime: Runtime = build_runtime(
            self.settings, watch_mappings=False, shared_limits=False, coalesce_window=timedelta(0)
        )
        self.queued: list[int] = []
        self.store = MidDeliveryKill(self.runtime.store, self.proxy)
        app = create_app(
            self.settings,
            store=self.store,
            broker=build_stub_broker(),
            mappings_holder=self.runtime.mappings,
            connectors={"salesforce": self.runtime.connectors["salesforce"]},
            enqueue=self.queued.append,
            sweep_interval=None,
            access_log=False,
        )
        self.receiver: ServerHandle = serve_in_thread(app, port=port)

    def wait_for(self, attempts: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.salesforce.deliveries()) < attempts and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.salesforce.deliveries()) >= attempts, self.salesforce.deliveries()

    def sync(self) -> None:
        """What the workers do with what the receiver queued: normalise, store, route, push."""
        ids, self.queued[:] = list(self.queued), []
        self.runtime.service.handle_inbox_events(ids)
        self.runtime.service.push("hubspot")

    def twin(self, salesforce_id: str) -> dict[str, str]:
        title = self.salesforce.org.opportunities[salesforce_id]["Name"]
        state: Any = self.hubspot.state
        found = [props for _, props in state.live_deals() if props.get("dealname") == title]
        assert len(found) == 1, f"no single HubSpot twin named {title!r}"
        return found[0]

    def close(self) -> None:
        self.receiver.stop()
        self.salesforce.stop()
        self.hubspot.stop()
        self.runtime.close()
        self.proxy.kill()


@pytest.fixture
def world(tmp_path: Path, database: str) -> Iterator[World]:
    built = World(tmp_path, database)
    try:
        yield built
    finally:
        built.close()


def hubspot_stage(world: World, salesforce_id: str) -> str:
    stage = world.salesforce.org.opportunities[salesforce_id]["StageName"]
    mappings = world.runtime.mappings.current
    key = mappings.to_canonical("salesforce", pipeline="Opportunity", stage=stage)
    target = mappings.to_target("hubspot", key)  # type: ignore[arg-type]
    assert target is not None and target.stage is not None
    return target.stage


def test_an_outbound_message_reaches_the_hubspot_twin(world: World) -> None:
    # Given a person moving an Opportunity in Salesforce
    changed = world.salesforce.simulate_change()
    world.wait_for(1)
    # Then the Outbound Message was stored, then acknowledged in SOAP
    first = world.salesforce.deliveries()[0]
    assert (first.status, first.error) == (200, None)
    assert len(world.queued) == 1
    # When the workers run, the HubSpot twin is created in the mapped stage
    world.sync()
    assert world.twin(changed)["dealstage"] == hubspot_stage(world, changed)
    # And a second move in Salesforce moves the twin
    world.salesforce.simulate_change(changed)
    world.wait_for(2)
    world.sync()
    assert world.twin(changed)["dealstage"] == hubspot_stage(world, changed)


def test_no_ack_when_the_database_dies_mid_delivery_then_the_retry_is_stored_once(world: World) -> None:
    # Given the database dying while a delivery is being stored
    world.store.armed = True
    changed = world.salesforce.simulate_change()
    world.wait_for(2)
    # Then Salesforce got no Ack (a SOAP fault, 503) and retries
    failed = world.salesforce.deliveries()[:2]
    assert [d.status for d in failed] == [503, 503]
    assert world.queued == []
    # When the database is back, the next retry is stored and acknowledged
    world.proxy.start()
    deadline = time.monotonic() + 20
    while not any(d.status == 200 for d in world.salesforce.deliveries()) and time.monotonic() < deadline:
        time.sleep(0.02)
    attempts = world.salesforce.deliveries()
    assert attempts[-1].status == 200 and all(d.status == 503 for d in attempts[:-1])
    assert len({d.delivery_id for d in attempts}) == 1  # one message, retried
    assert len(world.queued) == 1 and world.runtime.store.inbox_depth() == 1
    # And the change reaches the HubSpot twin
    world.sync()
    assert world.twin(changed)["dealstage"] == hubspot_stage(world, changed)
