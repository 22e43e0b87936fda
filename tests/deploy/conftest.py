"""Fixtures for the deployment suite: the reliability suite's private RabbitMQ virtual host."""

from __future__ import annotations

from tests.reliability.conftest import rabbitmq_vhost

__all__ = ["rabbitmq_vhost"]
