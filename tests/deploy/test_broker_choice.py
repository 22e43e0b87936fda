"""``SYNC_BROKER_URL`` picks the broker: Redis by default, RabbitMQ (Dramatiq's own broker) for amqp://.

The RabbitMQ tests run against the machine's server in a private virtual host: queues are durable,
messages persistent, publishes confirmed, and a message that fails for good lands in the store's
dead letters exactly as on Redis.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from sync_worker.broker import broker_middleware, broker_url, build_broker, check_broker, enqueue_errors
from sync_worker.errors import ConfigError, PermanentError, TransientError
from sync_worker.settings import Settings, describe_settings, load_settings
from tests.reliability.brokers import RabbitmqVhost, rabbitmqctl

CLOSED_AMQP = "amqp://guest:guest@127.0.0.1:1/%2F"


def test_unset_broker_url_means_the_redis_url() -> None:
    settings = Settings(_env_file=None, redis_url="redis://127.0.0.1:6399/3")
    assert broker_url(settings) == "redis://127.0.0.1:6399/3"
    broker = build_broker(settings)
    assert isinstance(broker, RedisBroker)
    assert broker.client.connection_pool.connection_kwargs["port"] == 6399


def test_a_redis_broker_url_is_used_for_the_queues_only() -> None:
    settings = Settings(
        _env_file=None, redis_url="redis://127.0.0.1:6399/3", broker_url="redis://127.0.0.1:6398/1"
    )
    broker = build_broker(settings)
    assert isinstance(broker, RedisBroker)
    assert broker.client.connection_pool.connection_kwargs["port"] == 6398
    assert settings.redis_url.endswith(":6399/3")  # rate limits, locks and leases stay there


def test_an_amqp_url_gives_rabbitmq_with_publisher_confirms_and_short_timeouts() -> None:
    settings = Settings(_env_file=None, broker_url="amqp://guest:guest@127.0.0.1:5672/sync")
    broker = build_broker(settings, connect_timeout=1.5, socket_timeout=4.0)
    assert isinstance(broker, RabbitmqBroker)
    assert broker.confirm_delivery is True
    params = broker.parameters
    assert (params.host, params.port, params.virtual_host) == ("127.0.0.1", 5672, "sync")
    assert (params.socket_timeout, params.stack_timeout, params.blocked_connection_timeout) == (
        1.5,
        5.5,
        24.0,
    )


def test_timeouts_given_in_the_amqp_url_win() -> None:
    settings = Settings(
        _env_file=None, broker_url="amqp://h/v?socket_timeout=7&blocked_connection_timeout=60"
    )
    broker = build_broker(settings)
    assert isinstance(broker, RabbitmqBroker)
    assert (broker.parameters.socket_timeout, broker.parameters.blocked_connection_timeout) == (7.0, 60.0)
    assert broker.parameters.stack_timeout == 6.0


@pytest.mark.parametrize("value", ["http://rabbit:5672", "kafka://x", "rabbitmq.internal:5672"])
def test_an_unknown_scheme_is_a_configuration_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="SYNC_BROKER_URL"):
        load_settings(_env_file=None, broker_url=value)


def test_an_unparsable_amqp_url_is_a_configuration_error_without_the_url() -> None:
    settings = Settings(_env_file=None, broker_url="amqp://user:s3cret@[bad/v")
    with pytest.raises(ConfigError, match="SYNC_BROKER_URL") as caught:
        build_broker(settings)
    assert "s3cret" not in str(caught.value)


def test_an_unreachable_rabbitmq_is_not_ready_and_refuses_enqueues_quickly() -> None:
    broker = build_broker(Settings(_env_file=None, broker_url=CLOSED_AMQP))
    started = time.monotonic()
    with pytest.raises(TransientError, match="broker unreachable"):
        check_broker(broker)
    with pytest.raises(enqueue_errors()):
        broker.enqueue(dramatiq.Message(queue_name="inbox", actor_name="a", args=(), kwargs={}, options={}))
    assert time.monotonic() - started < 5.0
    broker.close()


def _settings(vhost: RabbitmqVhost) -> Settings:
    return Settings(_env_file=None, broker_url=vhost.url)


def test_rabbitmq_queues_are_durable_and_messages_persistent(rabbitmq_vhost: RabbitmqVhost) -> None:
    broker = build_broker(_settings(rabbitmq_vhost))
    try:
        check_broker(broker)
        broker.declare_queue("inbox")
        broker.enqueue(dramatiq.Message(queue_name="inbox", actor_name="a", args=(1,), kwargs={}, options={}))
        listed = rabbitmqctl(
            "list_queues", "-p", rabbitmq_vhost.name, "name", "durable", "-q", "--no-table-headers"
        )
        durable = dict(line.split() for line in listed.splitlines() if line.strip())
        assert durable["inbox"] == "true" and durable["inbox.DQ"] == "true" and durable["inbox.XQ"] == "true"
        assert rabbitmq_vhost.ready("inbox") == 1
        with pika.BlockingConnection(pika.URLParameters(rabbitmq_vhost.url)) as connection:
            _, properties, body = connection.channel().basic_get("inbox", auto_ack=True)
        assert properties.delivery_mode == 2  # persistent: written to disk, kept over a restart
        assert b'"args":[1]' in body
    finally:
        broker.close()


class _Sink:
    def __init__(self) -> None:
        self.letters: list[dict[str, Any]] = []

    def add_dead_letter(self, **letter: Any) -> int:
        self.letters.append(letter)
        return len(self.letters)


def test_a_message_that_fails_for_good_on_rabbitmq_is_a_dead_letter_in_the_store(
    rabbitmq_vhost: RabbitmqVhost,
) -> None:
    sink = _Sink()
    broker = build_broker(_settings(rabbitmq_vhost), middleware=broker_middleware(dead_letters=lambda: sink))

    @dramatiq.actor(broker=broker, queue_name="inbox", throws=(PermanentError,), actor_name="refuse")
    def refuse(deal: str) -> None:
        raise PermanentError(f"deal {deal} archived")

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        refuse.send("42")
        deadline = time.monotonic() + 20
        while not sink.letters and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
        broker.close()
    assert len(sink.letters) == 1
    letter = sink.letters[0]
    assert (letter["queue"], letter["actor"], letter["payload"]["args"]) == ("inbox", "refuse", ["42"])
    assert letter["reason"] == "not retryable: PermanentError: deal 42 archived"


def test_the_broker_url_is_a_secret_masked_in_the_effective_configuration() -> None:
    settings = Settings(_env_file=None, broker_url="amqp://sync:r4bbit-pass@rabbit:5672/prod")
    assert "r4bbit-pass" not in repr(settings)
    assert describe_settings(settings)["SYNC_BROKER_URL"] == "********"
    assert broker_url(settings) == "amqp://sync:r4bbit-pass@rabbit:5672/prod"
