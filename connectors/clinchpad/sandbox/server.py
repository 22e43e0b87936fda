"""The ClinchPad sandbox behind the plug-in protocol (:class:`sync_worker.plugins.SandboxServer`).

Seeded from :class:`~sync_worker.plugins.SandboxOptions` (``seed``; ``deals`` leads, at most
:data:`MAX_LEADS`; ids dated before ``now``). With a ``webhook_base_url`` the account's webhook
(configured in ClinchPad's UI, so here at start) points at ``{base}/webhooks/clinchpad`` with a
generated handshake key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from connectors.clinchpad.sandbox.app import create_app
from connectors.clinchpad.sandbox.state import ClinchPadSandbox
from sync_worker.plugins import SandboxOptions
from sync_worker.sandbox.common import Delivery, FaultConfig, serve_in_thread

__all__ = ["MAX_LEADS", "ClinchPadServer", "clinchpad_sandbox"]

MAX_LEADS = 60


def _secret(seed: int, what: str) -> str:
    return hashlib.sha256(f"clinchpad-sandbox:{seed}:{what}".encode()).hexdigest()[:32]


class ClinchPadServer:
    """A running ClinchPad sandbox: :attr:`url` is the API base (``.../api/v1``)."""

    def __init__(self, options: SandboxOptions) -> None:
        self._api_key = _secret(options.seed, "api-key")
        self._handshake_key = _secret(options.seed, "handshake")
        base = options.webhook_base_url
        self.state = ClinchPadSandbox(
            api_key=self._api_key,
            handshake_key=self._handshake_key,
            webhook_url=f"{base.rstrip('/')}/webhooks/clinchpad" if base else None,
            seed=options.seed,
            leads=min(options.deals, MAX_LEADS),
            base=options.now,
            faults=options.faults,
            time_scale=options.time_scale,
        )
        self._handle = serve_in_thread(create_app(self.state), options.host)
        self.url = f"{self._handle.url}/api/v1"
        self._changes = 0
        self._stopped = False

    def __repr__(self) -> str:
        return f"ClinchPadServer(url={self.url!r})"

    def env(self) -> dict[str, str]:
        return {
            "SYNC_CLINCHPAD__API_KEY": self._api_key,
            "SYNC_CLINCHPAD__BASE_URL": self.url,
            "SYNC_CLINCHPAD__HANDSHAKE_KEY": self._handshake_key,
            "SYNC_CLINCHPAD__USER_ID": str(self.state.owner["_id"]),
        }

    def simulate_change(self) -> str:
        """A salesperson moves the next live lead to another stage of its pipeline."""
        with self.state._lock:
            live = sorted(lead_id for lead_id, lead in self.state.leads.items() if not lead["archived"])
            if not live:
                raise RuntimeError("the clinchpad sandbox has no live lead to change")
            lead = self.state.leads[live[self._changes % len(live)]]
            self._changes += 1
            others = [
                s["_id"] for s in self.state.stages[lead["pipeline_id"]] if s["_id"] != lead["stage_id"]
            ]
            self.state.simulate_user_change(lead["_id"], stage_id=others[self._changes % len(others)])
            return str(lead["_id"])

    def deliveries(self) -> list[Delivery]:
        return list(self.state.deliverer.deliveries)

    def forge(self, delivery: Delivery) -> Delivery:
        """The delivery with a handshake key an attacker would guess."""
        body = json.loads(delivery.body)
        body["handshake_key"] = "forged-" + _secret(0, "guess")
        return replace(delivery, body=json.dumps(body).encode())

    def set_faults(self, config: FaultConfig) -> None:
        self.state.faults.config = config

    def api_calls(self) -> int:
        return self.state.calls.total

    def rate_limited(self) -> int:
        return self.state.calls.by_status.get(429, 0)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.state.close()
            self._handle.stop()


def clinchpad_sandbox(options: SandboxOptions) -> ClinchPadServer:
    """The spec's sandbox factory."""
    return ClinchPadServer(options)
