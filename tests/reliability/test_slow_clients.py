"""Slow clients against a real ``sync-worker serve``: heads and bodies time out, the connection cap
stays below the file limit, and ``/healthz`` keeps answering throughout.

Given the receiver in its own process with a file limit of 256 descriptors, when more slow
clients than that connect (each sending its request head one byte a second) and a few send a
complete head but trickle their body, then every health probe made meanwhile is answered 200
promptly, every slow head is closed by the server within the head deadline (or shed earlier to
make room), and every slow body gets a 408 and is closed.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sync_worker.receiver.limits import connection_cap
from sync_worker.receiver.serve import HEAD_TIMEOUT
from tests.reliability.conftest import FIGURES

FILE_LIMIT = 256
SLOW_HEADS = 300  # more than the receiver's whole file limit
SLOW_BODIES = 10
BODY_TIMEOUT = 15.0  # create_app's default deadline for a webhook body
_HEAD = b"POST /webhooks/pipedrive HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _lower_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[str]:
    script = Path(sys.executable).parent / "sync-worker"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_") or k.startswith("SYNC_TEST_")}
    env.update(
        {
            "SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'sync.db'}",
            "SYNC_REDIS_URL": "redis://127.0.0.1:1/0",  # intake stores; the sweeper enqueues later
            "SYNC_PIPEDRIVE__API_TOKEN": "pd-token",
            "SYNC_PIPEDRIVE__WEBHOOK_USER": "pd-hook",
            "SYNC_PIPEDRIVE__WEBHOOK_PASSWORD": "pd-password",
        }
    )
    upgraded = subprocess.run(
        [str(script), "db", "upgrade"], cwd=tmp_path, env=env, capture_output=True, timeout=120, check=False
    )
    assert upgraded.returncode == 0, upgraded.stderr
    port = _free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(script), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_lower_file_limit,  # only setrlimit, before exec
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


async def _slow_head(port: int, closed_after: list[float]) -> None:
    """Send a request head one byte a second; note how long until the server closes it."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        closed_after.append(0.0)  # refused outright also counts as not held
        return
    try:
        for byte in _HEAD * 10:
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1024), timeout=1.0) == b"":
                    break
            except TimeoutError:
                continue
    except OSError:
        pass  # reset by the server
    finally:
        closed_after.append(time.monotonic() - started)
        writer.close()


async def _slow_body(port: int, answers: list[tuple[bytes, float]]) -> None:
    """A complete head announcing 1000 bytes, then the body one byte a second."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_HEAD + b"Content-Length: 1000\r\n\r\n")
    await writer.drain()
    got = b""
    try:
        for _ in range(1000):
            writer.write(b" ")
            await writer.drain()
            try:
                chunk = await asyncio.wait_for(reader.read(4096), timeout=1.0)
            except TimeoutError:
                continue
            if chunk == b"":
                break
            got += chunk
    except OSError:
        pass
    finally:
        answers.append((got, time.monotonic() - started))
        writer.close()


async def _probe_health(base: str, until: float, latencies: list[float], failures: list[str]) -> None:
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:  # a fresh connection each time
                response = await client.get(f"{base}/healthz")
            if response.status_code != 200:
                failures.append(f"status {response.status_code}")
        except httpx.HTTPError as exc:
            failures.append(type(exc).__name__)
        latencies.append(time.monotonic() - started)
        await asyncio.sleep(0.2)


def test_slow_clients_are_cut_off_and_health_keeps_answering(receiver: str) -> None:
    port = int(receiver.rsplit(":", 1)[1])
    heads_closed: list[float] = []
    bodies: list[tuple[bytes, float]] = []
    latencies: list[float] = []
    failures: list[str] = []

    async def scenario() -> None:
        until = time.monotonic() + BODY_TIMEOUT + 5
        probe = asyncio.create_task(_probe_health(receiver, until, latencies, failures))
        slow = [asyncio.create_task(_slow_body(port, bodies)) for _ in range(SLOW_BODIES)]
        for _ in range(SLOW_HEADS):
            slow.append(asyncio.create_task(_slow_head(port, heads_closed)))
            await asyncio.sleep(0.005)
        await asyncio.wait_for(asyncio.gather(*slow, probe), timeout=BODY_TIMEOUT + 60)

    asyncio.run(scenario())

    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    FIGURES["slow clients"] = {
        "slow_heads": SLOW_HEADS,
        "file_limit": FILE_LIMIT,
        "health_probes": len(latencies),
        "health_failures": len(failures),
        "health_p99_s": round(p99, 3),
        "slowest_head_closed_s": round(max(heads_closed), 1),
        "slowest_body_closed_s": round(max(t for _, t in bodies), 1),
    }
    assert failures == []
    assert p99 < 2.0, latencies[-5:]
    assert len(heads_closed) == SLOW_HEADS
    assert max(heads_closed) < HEAD_TIMEOUT + 5  # never held: cut at the deadline or shed before
    assert len(bodies) == SLOW_BODIES
    for answer, seconds in bodies:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"request_timeout"' in answer
        assert seconds < BODY_TIMEOUT + 5


@pytest.mark.parametrize(("soft_limit", "cap"), [(256, 192), (1024, 896), (65536, 57344), (40, 8)])
def test_the_connection_cap_leaves_descriptors_for_the_rest(soft_limit: int, cap: int) -> None:
    assert connection_cap(soft_limit) == cap
    assert connection_cap(soft_limit) < soft_limit or soft_limit < 8
