"""Change detection for a source without timestamps: a digest of the last full listing, as a cursor.

ClinchPad's lead object has no ``updated_at`` and the API has no deleted feed
(https://clinchpad.com/api/docs/leads), so a change can only be seen by comparing one complete
listing with the previous one. The connector never writes state: the previous listing travels in
the stream's opaque cursor, which the core persists once the pull's last page is stored
(:class:`sync_worker.canonical.PullPage`). Why the cursor and not the stored records: ``pull_changes``
gets no access to the store (the lookup of stored records exists only on the webhook path,
:class:`sync_worker.connector.NormaliseContext`), and a cursor commits atomically with the page that
closes the pull, so a crash part-way re-reads the listing against the old digest and loses nothing.

The cursor is ``cp1:`` + base64url(zlib(JSON)) of ``{"at": <listing time, ISO 8601>, "leads":
{<lead _id>: <fingerprint>}}``; a fingerprint (:func:`connectors.clinchpad.convert.fingerprint`)
is 11 characters, so a lead costs about 30 bytes once compressed. A cursor that does not decode
(another version, a hand edit) counts as no cursor: everything is re-sent, nothing is skipped.

A changed lead is stamped with the time the listing started, the latest moment the change can
have happened, never an earlier one: an earlier stamp could lose to a stored webhook time and
leave a real change unapplied while the digest moves on. The cost: a change a webhook already
stored is stored again by the next listing (no event: nothing differs), with the listing's time
and without the webhook's writer.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Final

__all__ = ["PREFIX", "Snapshot", "decode", "encode"]

PREFIX: Final = "cp1:"
_MAX_INFLATED = 64 * 1024 * 1024
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """The fingerprint of every lead of one complete listing, and when the listing started."""

    at: datetime
    leads: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def changed(self, lead_id: str, fingerprint: str) -> bool:
        """True when the lead is new since this listing or looked different in it."""
        return self.leads.get(lead_id) != fingerprint

    def vanished(self, seen: Mapping[str, str]) -> frozenset[str]:
        """Leads of this listing that ``seen`` (a later complete listing) no longer has."""
        return frozenset(self.leads.keys() - seen.keys())


def encode(snapshot: Snapshot) -> str:
    """The cursor value for ``snapshot`` (keys sorted, so equal listings give equal cursors)."""
    payload = {"at": snapshot.at.isoformat(), "leads": dict(sorted(snapshot.leads.items()))}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return PREFIX + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def decode(cursor: str | None) -> Snapshot | None:
    """The snapshot a cursor carries; None when there is none or it is not one of ours."""
    if not cursor:
        return None
    if not cursor.startswith(PREFIX):
        _log.warning("clinchpad: ignoring a lead cursor of another format; every lead is re-sent")
        return None
    body = cursor[len(PREFIX) :]
    try:
        packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, _MAX_INFLATED)
        data = json.loads(raw)
        at = datetime.fromisoformat(data["at"])
        leads = data["leads"]
        if at.tzinfo is None or not isinstance(leads, dict):
            raise ValueError("bad shape")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in leads.items()):
            raise ValueError("bad shape")
    except (binascii.Error, zlib.error, ValueError, KeyError, TypeError):
        _log.warning("clinchpad: the lead cursor does not decode; every lead is re-sent")
        return None
    return Snapshot(at=at, leads=MappingProxyType(dict(leads)))
