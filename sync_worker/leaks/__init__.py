"""Leak detection: stalled, regressed, dropped and unanswered deals, flagged once in the store.

``scan_leaks(store, model, now=...)`` raises and clears flags with set-based SQL and queues their
write-back to the CRM and their alerts through the outbox; ``push_alerts`` drains the queued alerts
(each sent with ``send_alert``); ``leak_gauges`` feeds the metrics endpoint. See
:mod:`sync_worker.leaks.scan` and :mod:`sync_worker.leaks.alerts`.
"""

from __future__ import annotations

from sync_worker.leaks.alerts import ALERT_TARGET, alert_client, alert_payload, push_alerts, send_alert
from sync_worker.leaks.rules import RULES, RuleBook, clear_flag, leak_flag
from sync_worker.leaks.scan import ORIGIN, ScanResult, clear_moved, leak_gauges, scan_leaks
from sync_worker.leaks.wire import deserialise_update, serialise_update

__all__ = [
    "ALERT_TARGET",
    "ORIGIN",
    "RULES",
    "RuleBook",
    "ScanResult",
    "alert_client",
    "alert_payload",
    "clear_flag",
    "clear_moved",
    "deserialise_update",
    "leak_flag",
    "leak_gauges",
    "push_alerts",
    "scan_leaks",
    "send_alert",
    "serialise_update",
]
