"""The built-in sandboxes (HubSpot, Pipedrive, LaGrowthMachine) behind the plug-in sandbox protocol.

The three are seeded together (:func:`sync_worker.sandbox.seed.seed_sandboxes` makes twins across
them), so one :func:`~sync_worker.sandbox.runner.start_sandbox` run per :class:`SandboxOptions` is
shared by the three adapters and stopped when the last of them stops. Each adapter satisfies
:class:`sync_worker.plugins.SandboxServer`: ``simulate_change`` is a person's change in the
provider's UI, announced by the provider's own webhook; ``forge`` breaks the authentication the way
an attacker without the secret would.

:func:`start_sandboxes` starts the sandbox of every given spec (the demo and ``sync-worker
sandbox`` pass the registry).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from sync_worker.plugins import ConnectorSpec, SandboxOptions, SandboxServer
from sync_worker.sandbox.common import CallCounter, Delivery, FaultConfig, Faults, WebhookDeliverer
from sync_worker.sandbox.runner import RunningSandbox, start_sandbox

__all__ = [
    "BUILT_IN",
    "hubspot_sandbox",
    "lagrowthmachine_sandbox",
    "pipedrive_sandbox",
    "plugin_sandboxes",
    "start_sandboxes",
]

BUILT_IN = ("hubspot", "pipedrive", "lagrowthmachine")
"""The sandboxes :func:`~sync_worker.sandbox.runner.start_sandbox` runs (seeded together)."""

_lock = threading.Lock()
_shared: dict[SandboxOptions, tuple[RunningSandbox, set[str]]] = {}


def _acquire(options: SandboxOptions, name: str) -> RunningSandbox:
    with _lock:
        entry = _shared.get(options)
        if entry is None:
            box = start_sandbox(
                seed=options.seed,
                deals=options.deals,
                host=options.host,
                time_scale=options.time_scale,
                faults=options.faults,
                webhook_base_url=options.webhook_base_url,
                now=options.now,
            )
            entry = (box, set())
            _shared[options] = entry
        entry[1].add(name)
        return entry[0]


def _release(options: SandboxOptions, name: str) -> None:
    with _lock:
        entry = _shared.get(options)
        if entry is None:
            return
        entry[1].discard(name)
        if entry[1]:
            return
        del _shared[options]
    entry[0].stop()


class _Adapter:
    """One system of a shared :class:`RunningSandbox`."""

    def __init__(
        self,
        name: str,
        options: SandboxOptions,
        pick: Callable[[RunningSandbox], tuple[str, Any]],
        env_prefix: str,
    ) -> None:
        self._name = name
        self._options = options
        self.box = _acquire(options, name)
        self.url, self.state = pick(self.box)
        self._env_prefix = env_prefix
        self._changes = 0
        self._stopped = False

    def env(self) -> dict[str, str]:
        return {k: v for k, v in self.box.env().items() if k.startswith(self._env_prefix)}

    def _deliverer(self) -> WebhookDeliverer:
        deliverer: WebhookDeliverer = self.state.deliverer
        return deliverer

    def deliveries(self) -> list[Delivery]:
        return list(self._deliverer().deliveries)

    def set_faults(self, config: FaultConfig) -> None:
        faults: Faults = self.state.faults
        faults.config = config

    def api_calls(self) -> int:
        calls: CallCounter = self.state.calls
        return calls.total

    def rate_limited(self) -> int:
        calls: CallCounter = self.state.calls
        return calls.by_status.get(429, 0)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            _release(self._options, self._name)

    def _next(self, items: list[Any]) -> Any:
        if not items:
            raise RuntimeError(f"the {self._name} sandbox has no seeded record to change")
        item = items[self._changes % len(items)]
        self._changes += 1
        return item


def _with_header(delivery: Delivery, name: str, value: str) -> Delivery:
    headers = {k: v for k, v in delivery.headers.items() if k.lower() != name.lower()}
    headers[name] = value
    return replace(delivery, headers=headers)


class _HubSpot(_Adapter):
    def simulate_change(self) -> str:
        deal_id, props = self._next(self.state.live_deals())
        stage = "contractsent" if props.get("dealstage") != "contractsent" else "presentationscheduled"
        self.state.simulate_user_change(deal_id, {"dealstage": stage})
        return str(deal_id)

    def forge(self, delivery: Delivery) -> Delivery:
        return _with_header(delivery, "X-HubSpot-Signature-v3", base64.b64encode(b"\0" * 32).decode())


class _Pipedrive(_Adapter):
    def simulate_change(self) -> str:
        deals = [d for d in self.state.list_deals() if d.get("status") == "open"]
        deal = self._next(deals)
        stages = [s["id"] for s in self.state.stages.values() if s["pipeline_id"] == deal["pipeline_id"]]
        others = [s for s in stages if s != deal["stage_id"]] or stages
        self.state.simulate_user_change(int(deal["id"]), stage_id=others[0])
        return str(deal["id"])

    def forge(self, delivery: Delivery) -> Delivery:
        token = base64.b64encode(b"sync-worker:not-the-password").decode()
        return _with_header(delivery, "Authorization", f"Basic {token}")


class _LaGrowthMachine(_Adapter):
    def simulate_change(self) -> str:
        leads = sorted(self.state.leads)
        lead_id = self._next(leads)
        self.state.simulate_reply(lead_id, "Sounds interesting, can we talk on Thursday?")
        return str(lead_id)

    def forge(self, delivery: Delivery) -> Delivery:
        base, _, query = delivery.url.partition("?")
        kept = "&".join(p for p in query.split("&") if p and not p.startswith("token="))
        url = f"{base}?{kept}&token=forged" if kept else f"{base}?token=forged"
        return replace(delivery, url=url, headers={**delivery.headers, "X-Sync-Token": "forged"})


def hubspot_sandbox(options: SandboxOptions) -> SandboxServer:
    return _HubSpot("hubspot", options, lambda box: (box.hubspot_url, box.hubspot), "SYNC_HUBSPOT__")


def pipedrive_sandbox(options: SandboxOptions) -> SandboxServer:
    return _Pipedrive(
        "pipedrive", options, lambda box: (box.pipedrive_url, box.pipedrive), "SYNC_PIPEDRIVE__"
    )


def lagrowthmachine_sandbox(options: SandboxOptions) -> SandboxServer:
    return _LaGrowthMachine(
        "lagrowthmachine", options, lambda box: (box.lgm_url, box.lgm), "SYNC_LAGROWTHMACHINE__"
    )


def plugin_sandboxes(options: SandboxOptions) -> Mapping[str, SandboxServer]:
    """The sandboxes of every registered connector beyond the built-in three, started."""
    from sync_worker.plugins import registry

    return start_sandboxes([spec for name, spec in registry().items() if name not in BUILT_IN], options)


def start_sandboxes(specs: Iterable[ConnectorSpec], options: SandboxOptions) -> Mapping[str, SandboxServer]:
    """The sandbox of every spec that has one, started with ``options``; stopped again on failure."""
    started: dict[str, SandboxServer] = {}
    try:
        for spec in specs:
            if spec.sandbox is not None:
                started[spec.name] = spec.sandbox(options)
    except BaseException:
        for server in started.values():
            server.stop()
        raise
    return started
