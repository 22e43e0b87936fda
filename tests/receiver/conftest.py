"""Fixtures for the receiver: a migrated SQLite store per test, real connectors, a stub broker.

Redis-backed tests use the real server at 127.0.0.1:6379, database 15, flushed around each test.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from dramatiq.brokers.stub import StubBroker
from pydantic import SecretStr
from starlette.applications import Starlette

from connectors import lagrowthmachine, pipedrive
from connectors.hubspot import HubSpotConnector
from connectors.lagrowthmachine.settings import LaGrowthMachineSettings
from connectors.pipedrive.settings import PipedriveSettings
from sync_worker.broker import build_stub_broker
from sync_worker.intake import WebhookSource
from sync_worker.mappings import Mappings, MappingsHolder, load_mappings
from sync_worker.metrics import ReceiverMetrics
from sync_worker.receiver import create_app
from sync_worker.settings import Settings, default_mappings_dir
from sync_worker.store import SyncStore, upgrade_database
from tests.conftest import REDIS_SERVER

HUBSPOT_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"  # the secret of HubSpot's documented examples
PD_USER = "pd-hook"
PD_PASSWORD = "pd-password-123"
LGM_SECRET = "lgm-shared-secret-456"
NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
REDIS_TEST_URL = f"{REDIS_SERVER}/15"
CLOSED_REDIS_URL = "redis://127.0.0.1:1/15"
FIXTURES = Path(__file__).parent.parent / "connectors" / "fixtures"


def fixture_bytes(system: str, name: str) -> bytes:
    return (FIXTURES / system / name).read_bytes()


@pytest.fixture(scope="session")
def mappings() -> Mappings:
    return load_mappings(default_mappings_dir())


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture
def store(tmp_path: Path, migrated_template: Path) -> Iterator[SyncStore]:
    path = tmp_path / "store.db"
    shutil.copyfile(migrated_template, path)
    sync_store = SyncStore(f"sqlite:///{path}")
    yield sync_store
    sync_store.close()


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "database_url": "sqlite:///./unused.db",
        "redis_url": REDIS_TEST_URL,
        "pipedrive": PipedriveSettings(
            api_token=SecretStr("pd-api-token"), webhook_user=PD_USER, webhook_password=SecretStr(PD_PASSWORD)
        ),
        "lagrowthmachine": LaGrowthMachineSettings(
            api_key=SecretStr("lgm-api-key"), webhook_secret=SecretStr(LGM_SECRET)
        ),
    }
    base.update(overrides)
    return Settings(**base)


def make_connectors(
    settings: Settings,
    mappings: Mappings,
    *,
    accept_v1: bool = False,
    clock: Callable[[], datetime] = lambda: NOW,
) -> dict[str, WebhookSource]:
    return {
        "hubspot": HubSpotConnector(
            mappings,
            token=SecretStr("hs-token"),
            client_secret=SecretStr(HUBSPOT_SECRET),
            accept_signature_v1=accept_v1,
            clock=clock,
        ),
        "pipedrive": pipedrive.from_settings(settings, mappings),
        "lagrowthmachine": lagrowthmachine.from_settings(settings, mappings),
    }


class SyncClient:
    """A blocking client over ``httpx.ASGITransport`` (Starlette's TestClient warns with httpx).

    Each call runs on its own event loop; the app's lifespan is not run (tests that need the
    background sweeper drive it themselves).
    """

    def __init__(self, app: Starlette, base_url: str = "http://testserver") -> None:
        self.app = app
        self.base_url = base_url

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=self.base_url) as client:
                response = await client.request(method, url, **kwargs)
                await response.aread()
                return response

        return asyncio.run(call())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        """Nothing held between calls."""


class Harness:
    """One receiver under test with everything it was built from."""

    def __init__(
        self,
        settings: Settings,
        store: SyncStore,
        broker: Any,
        connectors: dict[str, WebhookSource],
        holder: Any,
        **app_options: Any,
    ) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.connectors = connectors
        self.metrics = ReceiverMetrics()
        self.app: Starlette = create_app(
            settings,
            store=store,
            broker=broker,
            mappings_holder=holder,
            connectors=connectors,
            metrics=self.metrics,
            **app_options,
        )
        self.client = SyncClient(self.app)

    def close(self) -> None:
        self.client.close()
        for connector in self.connectors.values():
            connector.close()  # type: ignore[attr-defined]


@pytest.fixture
def holder(mappings: Mappings) -> MappingsHolder:
    return MappingsHolder(default_mappings_dir(), interval=60.0)


@pytest.fixture
def stub_broker() -> StubBroker:
    return build_stub_broker()


@pytest.fixture
def make_harness(
    store: SyncStore, mappings: Mappings, stub_broker: StubBroker, holder: MappingsHolder
) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(
        *,
        settings: Settings | None = None,
        broker: Any = None,
        accept_v1: bool = False,
        the_store: Any = None,
        mappings_holder: Any = holder,
        **app_options: Any,
    ) -> Harness:
        chosen = settings or make_settings()
        app_options.setdefault("sweep_interval", None)
        harness = Harness(
            chosen,
            the_store if the_store is not None else store,
            broker if broker is not None else stub_broker,
            make_connectors(chosen, mappings, accept_v1=accept_v1),
            mappings_holder,
            **app_options,
        )
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("Redis at 127.0.0.1:6379 is not answering")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
