"""Start all three sandboxes (HubSpot, Pipedrive, LaGrowthMachine), seeded, on free local ports.

:func:`start_sandbox` returns a :class:`RunningSandbox` with the three base URLs, the state objects,
the credentials it generated and :meth:`RunningSandbox.env`, the ``SYNC_*`` variables that point the
service at them. With ``webhook_base_url`` the sandboxes deliver their webhooks to
``{webhook_base_url}/webhooks/hubspot``, ``/webhooks/pipedrive`` (HTTP basic auth) and
``/webhooks/lagrowthmachine?token=<secret>``. Seeding happens before the subscriptions exist, so the
seed data announces nothing. Credentials never appear in reprs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType

from sync_worker.sandbox.common import FaultConfig, Faults, ServerHandle, serve_in_thread
from sync_worker.sandbox.hubspot import HubSpotSandbox, HubSpotSandboxConfig
from sync_worker.sandbox.hubspot import create_app as create_hubspot_app
from sync_worker.sandbox.lagrowthmachine import LaGrowthMachineSandbox
from sync_worker.sandbox.lagrowthmachine import create_app as create_lgm_app
from sync_worker.sandbox.pipedrive import PipedriveSandbox
from sync_worker.sandbox.pipedrive import create_app as create_pipedrive_app
from sync_worker.sandbox.seed import SeedSummary, seed_sandboxes

__all__ = ["RunningSandbox", "SandboxCredentials", "start_sandbox"]


@dataclass(frozen=True)
class SandboxCredentials:
    """The secrets generated for one sandbox run (masked in the repr)."""

    hubspot_token: str = field(repr=False)
    hubspot_client_secret: str = field(repr=False)
    pipedrive_api_token: str = field(repr=False)
    pipedrive_webhook_user: str
    pipedrive_webhook_password: str = field(repr=False)
    lgm_api_key: str = field(repr=False)
    lgm_webhook_secret: str = field(repr=False)

    @classmethod
    def generate(cls) -> SandboxCredentials:
        return cls(
            hubspot_token="pat-sandbox-" + secrets.token_hex(16),
            hubspot_client_secret=secrets.token_urlsafe(24),
            pipedrive_api_token=secrets.token_hex(20),
            pipedrive_webhook_user="sync-worker",
            pipedrive_webhook_password=secrets.token_urlsafe(18),
            lgm_api_key=secrets.token_hex(16),
            lgm_webhook_secret=secrets.token_urlsafe(24),
        )


@dataclass
class RunningSandbox:
    """Three live sandbox servers; :meth:`stop` (or leaving the ``with`` block) shuts them down."""

    hubspot_url: str
    pipedrive_url: str
    lgm_url: str
    hubspot: HubSpotSandbox
    pipedrive: PipedriveSandbox
    lgm: LaGrowthMachineSandbox
    credentials: SandboxCredentials
    summary: SeedSummary
    _handles: list[ServerHandle] = field(repr=False, default_factory=list)

    def env(self) -> dict[str, str]:
        """The ``SYNC_*`` environment that points the service at these servers."""
        creds = self.credentials
        return {
            "SYNC_HUBSPOT__BASE_URL": self.hubspot_url,
            "SYNC_HUBSPOT__TOKEN": creds.hubspot_token,
            "SYNC_HUBSPOT__CLIENT_SECRET": creds.hubspot_client_secret,
            "SYNC_PIPEDRIVE__BASE_URL": self.pipedrive_url,
            "SYNC_PIPEDRIVE__API_TOKEN": creds.pipedrive_api_token,
            "SYNC_PIPEDRIVE__WEBHOOK_USER": creds.pipedrive_webhook_user,
            "SYNC_PIPEDRIVE__WEBHOOK_PASSWORD": creds.pipedrive_webhook_password,
            "SYNC_LAGROWTHMACHINE__BASE_URL": self.lgm_url,
            "SYNC_LAGROWTHMACHINE__API_KEY": creds.lgm_api_key,
            "SYNC_LAGROWTHMACHINE__WEBHOOK_SECRET": creds.lgm_webhook_secret,
        }

    def stop(self) -> None:
        """Stop the servers and the webhook deliverers."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.stop()
        self.hubspot.close()
        self.pipedrive.close()
        self.lgm.close()

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_sandbox(
    *,
    seed: int = 1,
    deals: int = 200,
    host: str = "127.0.0.1",
    time_scale: float = 1.0,
    faults: FaultConfig | None = None,
    webhook_base_url: str | None = None,
    now: datetime | None = None,
) -> RunningSandbox:
    """Build, seed and serve the three sandboxes; see the module docstring.

    ``time_scale`` scales webhook retry delays (0.001 makes HubSpot's hours take seconds). ``faults``
    applies to all three servers, each with its own seeded :class:`Faults`. ``now`` anchors the seed
    data's timestamps (default: the current time).
    """
    creds = SandboxCredentials.generate()
    base = webhook_base_url.rstrip("/") if webhook_base_url else None
    hubspot = HubSpotSandbox(
        HubSpotSandboxConfig(
            private_app_tokens=frozenset({creds.hubspot_token}),
            client_secret=creds.hubspot_client_secret,
            time_scale=time_scale,
        ),
        faults=Faults(faults),
    )
    pipedrive = PipedriveSandbox(
        api_token=creds.pipedrive_api_token, faults=Faults(faults), time_scale=time_scale
    )
    lgm = LaGrowthMachineSandbox(api_key=creds.lgm_api_key, faults=Faults(faults), time_scale=time_scale)
    summary = seed_sandboxes(hubspot, pipedrive, lgm, deals=deals, seed=seed, now=now)
    if base is not None:
        hubspot.webhook_url = f"{base}/webhooks/hubspot"
        pipedrive.add_webhook(
            {
                "subscription_url": f"{base}/webhooks/pipedrive",
                "event_action": "*",
                "event_object": "deal",
                "http_auth_user": creds.pipedrive_webhook_user,
                "http_auth_password": creds.pipedrive_webhook_password,
                "version": "2.0",
                "name": "sync-worker",
            }
        )
        lgm.add_inbox_webhook(
            {
                "url": f"{base}/webhooks/lagrowthmachine?token={creds.lgm_webhook_secret}",
                "name": "sync-worker",
                "campaigns": ["all"],
                "type": "INBOX_EVENT",
            }
        )
    handles: list[ServerHandle] = []
    try:
        for app in (create_hubspot_app(hubspot), create_pipedrive_app(pipedrive), create_lgm_app(lgm)):
            handles.append(serve_in_thread(app, host=host))
    except BaseException:
        for handle in handles:
            handle.stop()
        for box in (hubspot, pipedrive, lgm):
            box.close()
        raise
    return RunningSandbox(
        hubspot_url=handles[0].url,
        pipedrive_url=handles[1].url,
        lgm_url=handles[2].url + "/flow",
        hubspot=hubspot,
        pipedrive=pipedrive,
        lgm=lgm,
        credentials=creds,
        summary=summary,
        _handles=handles,
    )
