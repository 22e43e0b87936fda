"""The brokers the reliability scenarios run on: Redis and RabbitMQ, each real.

:class:`BrokerUnderTest` is what a scenario needs of a broker: the ``SYNC_BROKER_URL`` to hand to the
service, how many messages a queue holds ready and how many consumers hold unacknowledged, and, for
a private server, a restart. Redis is a private ``redis-server`` (:class:`~.conftest.RedisServer`);
RabbitMQ is either a private virtual host on the machine's server at 127.0.0.1:5672 (made with
``rabbitmqctl add_vhost`` and deleted afterwards, so parallel runs never share queues) or, for the
restart scenarios, a private RabbitMQ node on free ports with its own data directory (the shared
server is never restarted). Counts on RabbitMQ come from ``rabbitmqctl list_queues``
(https://www.rabbitmq.com/docs/man/rabbitmqctl.8#list_queues); nodes are started with
``rabbitmq-server -detached`` configured by ``RABBITMQ_*`` variables
(https://www.rabbitmq.com/docs/configure#customise-environment).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import redis

from tests.conftest import service_unavailable

__all__ = [
    "BROKER_KINDS",
    "BrokerUnderTest",
    "RabbitmqNode",
    "RabbitmqVhost",
    "RedisBrokerUnderTest",
    "RestartableBroker",
    "RestartableRedis",
    "rabbitmqctl",
]

BROKER_KINDS = ("redis", "rabbitmq")
SHARED_RABBITMQ = "amqp://guest:guest@127.0.0.1:5672"
_NAMESPACE = "sync-worker"


def rabbitmqctl(*args: str, node: str | None = None, timeout: float = 60.0) -> str:
    """Run ``rabbitmqctl`` (against ``node`` when given); its output. Unavailable: skip or fail."""
    binary = shutil.which("rabbitmqctl")
    if binary is None:
        service_unavailable("rabbitmqctl is not installed")
    argv = [binary, *(["-n", node] if node else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout[-500:]} {done.stderr[-500:]}")
    return done.stdout


class BrokerUnderTest(Protocol):
    kind: str

    @property
    def url(self) -> str: ...

    def ready(self, queue: str) -> int:
        """Messages waiting on ``queue`` (not yet delivered to a consumer)."""
        ...

    def unacked(self, queue: str) -> int:
        """Messages of ``queue`` delivered to a consumer and not acknowledged yet."""
        ...


@dataclass
class RedisBrokerUnderTest:
    """Dramatiq's Redis layout: the queue is a list of ids, each worker's unacked ids a set."""

    url: str
    kind: str = "redis"

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1.0)

    def ready(self, queue: str) -> int:
        with self._client() as client:
            return int(client.llen(f"{_NAMESPACE}:{queue}"))

    def unacked(self, queue: str) -> int:
        with self._client() as client:
            return sum(int(client.scard(k)) for k in client.scan_iter(f"{_NAMESPACE}:__acks__.*.{queue}"))


class _Server(Protocol):
    @property
    def url(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class RestartableBroker(BrokerUnderTest, Protocol):
    def start(self) -> None: ...

    def stop(self) -> None:
        """The broker process exits: every connection to it drops."""
        ...

    def restart(self) -> None: ...


class RestartableRedis(RedisBrokerUnderTest):
    """A private ``redis-server`` without persistence: a restart empties it."""

    def __init__(self, server: _Server) -> None:
        super().__init__(server.url)
        self._server = server

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def restart(self) -> None:
        self._server.stop()
        self._server.start()


def _queue_counts(vhost: str, node: str | None) -> dict[str, tuple[int, int]]:
    out = rabbitmqctl(
        "list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged", "-q",
        "--no-table-headers", node=node,
    )  # fmt: skip
    counts: dict[str, tuple[int, int]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            counts[parts[0]] = (int(parts[1]), int(parts[2]))
    return counts


def _add_vhost(name: str, node: str | None) -> None:
    rabbitmqctl("add_vhost", name, node=node)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*", node=node)


@dataclass
class RabbitmqVhost:
    """A private virtual host on the machine's RabbitMQ server (127.0.0.1:5672, guest/guest)."""

    name: str = field(default_factory=lambda: f"sync-test-{uuid.uuid4().hex[:12]}")
    kind: str = "rabbitmq"

    @property
    def url(self) -> str:
        return f"{SHARED_RABBITMQ}/{self.name}"

    def create(self) -> None:
        try:
            _add_vhost(self.name, None)
        except RuntimeError as exc:
            service_unavailable(f"RabbitMQ at 127.0.0.1:5672 is not usable: {exc}")

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)

    def ready(self, queue: str) -> int:
        return _queue_counts(self.name, None).get(queue, (0, 0))[0]

    def unacked(self, queue: str) -> int:
        return _queue_counts(self.name, None).get(queue, (0, 0))[1]


class RabbitmqNode:
    """A private RabbitMQ node (own ports, data and log directory) that a test may restart.

    ``rabbitmq-server`` runs as the ``rabbitmq`` user, so the directory is made under /tmp and
    given to that user (pytest's own temp directories are private to root).
    """

    kind = "rabbitmq"

    def __init__(self) -> None:
        if shutil.which("rabbitmq-server") is None:
            service_unavailable("rabbitmq-server is not installed")
        try:
            owner = pwd.getpwnam("rabbitmq")
        except KeyError:
            service_unavailable("no rabbitmq user to run a private node as")
        from tests.reliability.conftest import free_port

        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"synctest{self.port}@localhost"
        self.vhost = "sync-test"
        self.directory = Path(tempfile.mkdtemp(prefix="sync-rabbitmq-", dir="/tmp"))
        (self.directory / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        for path in (self.directory, self.directory / "rabbitmq.conf"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        self.running = False

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{self.vhost}"

    def start(self) -> None:
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq.conf"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.directory / "pid"),
        }
        subprocess.run(
            ["rabbitmq-server", "-detached"],
            env=env,
            cwd="/tmp",
            check=False,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                rabbitmqctl("await_startup", "--timeout", "10", node=self.node, timeout=30)
                break
            except RuntimeError:
                time.sleep(0.5)
        else:
            service_unavailable(f"private RabbitMQ node {self.node} did not start")
        self.running = True
        if self.vhost not in rabbitmqctl("list_vhosts", "-q", node=self.node).split():
            _add_vhost(self.vhost, self.node)

    def stop(self) -> None:
        """Shut the node down (the Erlang VM exits); its data directory stays for a restart."""
        if self.running:
            rabbitmqctl("shutdown", node=self.node, timeout=120)
            self.running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def ready(self, queue: str) -> int:
        return _queue_counts(self.vhost, self.node).get(queue, (0, 0))[0]

    def unacked(self, queue: str) -> int:
        return _queue_counts(self.vhost, self.node).get(queue, (0, 0))[1]
