"""Dramatiq actors: thin, module-level, taking JSON-serialisable ids only.

Each actor calls one service function and returns. What a worker process needs (the store, the
connectors' translations) is set once per process with :func:`configure_actors`, never read from the
environment here. Actors are declared against :data:`sync_worker.broker.UNBOUND_BROKER` so importing
this module has no side effect; :func:`sync_worker.broker.install_broker` binds them to the real one.
https://dramatiq.io/guide.html#actors and https://dramatiq.io/best_practices.html
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import dramatiq
from dramatiq import Actor, Broker

from sync_worker.broker import UNBOUND_BROKER
from sync_worker.errors import ConfigError
from sync_worker.intake import Enqueue, InboxStore, Normaliser, handle_inbox_event

__all__ = [
    "ALL_ACTORS",
    "INBOX_QUEUE",
    "ActorContext",
    "broker_enqueue",
    "clear_actors",
    "configure_actors",
    "current_context",
    "process_inbox_event",
]

INBOX_QUEUE: Final = "inbox"


@dataclass(frozen=True)
class ActorContext:
    """What the actors of one worker process use, built once by the entry point."""

    store: InboxStore
    normalisers: Mapping[str, Normaliser] = field(default_factory=dict)


_context: ActorContext | None = None
_context_lock = threading.Lock()


def configure_actors(
    store: InboxStore, *, normalisers: Mapping[str, Normaliser] | None = None
) -> ActorContext:
    """Set the worker process's context (call before the worker starts consuming)."""
    global _context
    context = ActorContext(store=store, normalisers=dict(normalisers or {}))
    with _context_lock:
        _context = context
    return context


def clear_actors() -> None:
    """Forget the context (worker shutdown, tests); actors then refuse to run."""
    global _context
    with _context_lock:
        _context = None


def current_context() -> ActorContext:
    """The configured context; :class:`ConfigError` if the entry point did not configure one."""
    context = _context
    if context is None:
        raise ConfigError("actors are not configured: call sync_worker.actors.configure_actors() first")
    return context


@dramatiq.actor(broker=UNBOUND_BROKER, queue_name=INBOX_QUEUE, max_retries=8)
def process_inbox_event(inbox_id: int) -> None:
    """Apply one accepted webhook event (idempotent: a redelivery is a no-op)."""
    context = current_context()
    handle_inbox_event(context.store, inbox_id, normalisers=context.normalisers)


ALL_ACTORS: Final[tuple[Actor[Any, Any], ...]] = (process_inbox_event,)


def broker_enqueue(broker: Broker) -> Enqueue:
    """An :data:`~sync_worker.intake.Enqueue` that sends ``process_inbox_event`` on ``broker``.

    The message is built from the actor (name, queue) and enqueued on the broker given, whichever
    broker the actor is bound to globally; the queue is declared on it first.
    """
    broker.declare_queue(process_inbox_event.queue_name)

    def enqueue(inbox_id: int) -> None:
        broker.enqueue(process_inbox_event.message(inbox_id))

    return enqueue
