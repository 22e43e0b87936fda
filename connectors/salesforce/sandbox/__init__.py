"""A local Salesforce org for tests, benchmarks, ``sync-worker sandbox`` and the demo.

It serves the token endpoint (refresh-token and JWT bearer grants), SOQL ``query``/``queryAll``
with ``nextRecordsUrl`` batches, ``updated/``/``deleted/``, sObject Collections and single-record
writes, error arrays, ``Sforce-Limit-Info`` and 403 ``REQUEST_LIMIT_EXCEEDED``, and sends Outbound
Messages (SOAP) for every Opportunity change to ``{webhook_base_url}/webhooks/salesforce``,
retried until the listener answers ``Ack`` true. Pages followed are cited in
:mod:`~connectors.salesforce.sandbox.app`, :mod:`~connectors.salesforce.sandbox.service`,
:mod:`~connectors.salesforce.sandbox.org` and :mod:`~connectors.salesforce.sandbox.messages`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.salesforce.sandbox.app import build_app
from connectors.salesforce.sandbox.messages import OutboundSender
from connectors.salesforce.sandbox.org import FLAG_FIELD, STOCK_STAGES, Org, sf_id
from connectors.salesforce.sandbox.service import Service
from connectors.salesforce.webhooks import OUTBOUND_NS
from sync_worker.plugins import SandboxOptions
from sync_worker.sandbox.common import (
    CallCounter,
    Delivery,
    FaultConfig,
    Faults,
    ServerHandle,
    serve_in_thread,
)

__all__ = ["SalesforceSandbox", "start_sandbox"]

_OPEN_STAGES = [name for name, _, _, closed, _ in STOCK_STAGES if not closed]


class SalesforceSandbox:
    """A running sandbox org (:class:`sync_worker.plugins.SandboxServer`)."""

    def __init__(self, options: SandboxOptions) -> None:
        base = options.now or datetime.now(UTC)
        started = time.monotonic()
        self._ahead = timedelta(0)

        def now() -> datetime:
            return base + timedelta(seconds=time.monotonic() - started) + self._ahead

        self.org = Org(seed=options.seed, deals=options.deals, now=now)
        self.faults = Faults(options.faults)
        self.calls = CallCounter()
        self._pending: Service | None = None
        self._changes = 0
        hook = (
            f"{options.webhook_base_url.rstrip('/')}/webhooks/salesforce"
            if options.webhook_base_url
            else None
        )
        self._handle: ServerHandle | None = None
        sender = OutboundSender(
            org_id=self.org.org_id, base_url="", url=hook, time_scale=options.time_scale, faults=self.faults
        )
        self.state = Service(self.org, sender, base_url="")
        try:
            self._handle = serve_in_thread(build_app(self.state, self.calls, self.faults), host=options.host)
        except BaseException:
            sender.close()
            raise
        self.url = self._handle.url
        self.state.base_url = sender.base_url = self.url

    def __repr__(self) -> str:
        return f"SalesforceSandbox({self.url!r})"

    def env(self) -> dict[str, str]:
        service = self.state
        return {
            "SYNC_SALESFORCE__CLIENT_ID": service.client_id,
            "SYNC_SALESFORCE__CLIENT_SECRET": service.client_secret,
            "SYNC_SALESFORCE__REFRESH_TOKEN": service.refresh_token,
            "SYNC_SALESFORCE__LOGIN_URL": self.url,
            "SYNC_SALESFORCE__ORGANIZATION_ID": self.org.org_id,
            "SYNC_SALESFORCE__USER_ID": self.org.integration_user,
            "SYNC_SALESFORCE__FLAG_FIELD": FLAG_FIELD,
        }

    def simulate_change(self, record_id: str | None = None) -> str:
        """A person moves an open Opportunity (``record_id``, else the next seeded one) to the next
        open stage; an Outbound Message follows."""
        with self.org.lock:
            candidates = sorted(o["Id"] for o in self.org.live() if not o["IsClosed"])
            if not candidates:
                raise RuntimeError("the salesforce sandbox has no open Opportunity to change")
            if record_id is None:
                record_id = candidates[self._changes % len(candidates)]
                self._changes += 1
            opp = self.org.opportunities[record_id]
            position = _OPEN_STAGES.index(opp["StageName"])
            stage = _OPEN_STAGES[position + 1] if position + 1 < len(_OPEN_STAGES) else _OPEN_STAGES[0]
            self.org.apply(opp, {"StageName": stage}, self.org.person_user)
            changed: dict[str, Any] = dict(opp)
        self.state.sender.notify([changed])
        return str(changed["Id"])

    def advance(self, by: timedelta) -> None:
        """Move the org's clock forward (a test need not wait for the delete log's next minute)."""
        with self.org.lock:
            self._ahead += by

    def deliveries(self) -> list[Delivery]:
        return list(self.state.sender.deliveries)

    def forge(self, delivery: Delivery) -> Delivery:
        """The same message claiming to come from this org, sent by someone else's org."""
        other = sf_id("00D", 999_999)
        tag = f"<OrganizationId>{self.org.org_id}</OrganizationId>".encode()
        body = delivery.body.replace(tag, f"<OrganizationId>{other}</OrganizationId>".encode())
        assert OUTBOUND_NS.encode() in body
        return replace(delivery, body=body)

    def set_faults(self, config: FaultConfig) -> None:
        self.faults.config = config

    def api_calls(self) -> int:
        return self.calls.total

    def rate_limited(self) -> int:
        return self.state.limited

    def stop(self) -> None:
        self.state.sender.close()
        if self._handle is not None:
            self._handle.stop()
            self._handle = None


def start_sandbox(options: SandboxOptions) -> SalesforceSandbox:
    """Start a seeded sandbox org on a free port of ``options.host``."""
    return SalesforceSandbox(options)
