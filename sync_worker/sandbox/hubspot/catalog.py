"""The stock HubSpot deal pipeline and deal property definitions the sandbox starts with.

Follows:
- Pipelines and stages (``id``, ``label``, ``displayOrder``, ``metadata.probability`` and
  ``metadata.isClosed`` as strings, ``archived``, ``createdAt``, ``updatedAt``) and the stock
  ``default`` "Sales Pipeline": https://developers.hubspot.com/docs/api-reference/crm-pipelines-v3/guide
  and https://knowledge.hubspot.com/object-settings/set-up-and-customize-pipelines
- Property definitions (``name``, ``label``, ``type``, ``fieldType``, ``groupName``, ``options``,
  ``modificationMetadata``...) and groups: https://developers.hubspot.com/docs/api-reference/crm-properties-v3/guide
- Default deal properties and the ``hs_date_entered_{stageId}`` / ``hs_v2_date_entered_current_stage``
  stage-history properties: https://knowledge.hubspot.com/properties/hubspots-default-deal-properties
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sync_worker.sandbox.hubspot.wire import to_iso

__all__ = [
    "DEFAULT_STAGES",
    "READ_ONLY_PROPERTIES",
    "StageSpec",
    "pipeline_definition",
    "property_definition",
    "stage_properties",
    "stock_groups",
    "stock_properties",
]

StageSpec = tuple[str, str, float, bool]
"""(stage id, label, probability 0..1, is closed)."""

DEFAULT_STAGES: tuple[StageSpec, ...] = (
    ("appointmentscheduled", "Appointment Scheduled", 0.2, False),
    ("qualifiedtobuy", "Qualified To Buy", 0.4, False),
    ("presentationscheduled", "Presentation Scheduled", 0.6, False),
    ("decisionmakerboughtin", "Decision Maker Bought-In", 0.8, False),
    ("contractsent", "Contract Sent", 0.9, False),
    ("closedwon", "Closed Won", 1.0, True),
    ("closedlost", "Closed Lost", 0.0, True),
)

READ_ONLY_PROPERTIES = frozenset(
    {
        "hs_object_id",
        "hs_lastmodifieddate",
        "hs_deal_stage_probability",
        "hs_is_closed",
        "hs_is_closed_won",
        "hs_v2_date_entered_current_stage",
    }
)
"""Calculated by HubSpot; an update that sets one is a validation error."""


def pipeline_definition(
    pipeline_id: str, label: str, stages: Sequence[StageSpec], now_ms: int
) -> dict[str, Any]:
    """A pipeline in the wire format of ``GET /crm/v3/pipelines/deals``."""
    stamp = to_iso(now_ms)
    return {
        "id": pipeline_id,
        "label": label,
        "displayOrder": 0,
        "archived": False,
        "createdAt": stamp,
        "updatedAt": stamp,
        "stages": [
            {
                "id": stage_id,
                "label": stage_label,
                "displayOrder": order,
                "metadata": {"isClosed": "true" if closed else "false", "probability": _probability(prob)},
                "archived": False,
                "createdAt": stamp,
                "updatedAt": stamp,
                "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
            }
            for order, (stage_id, stage_label, prob, closed) in enumerate(stages)
        ],
    }


def _probability(value: float) -> str:
    text = f"{value:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def property_definition(
    name: str,
    label: str,
    type_: str,
    field_type: str,
    group: str,
    now_ms: int,
    *,
    hubspot_defined: bool = True,
    read_only: bool = False,
    options: Sequence[dict[str, Any]] = (),
    description: str = "",
) -> dict[str, Any]:
    """One property definition in the wire format of ``GET /crm/v3/properties/deals``."""
    stamp = to_iso(now_ms)
    return {
        "name": name,
        "label": label,
        "type": type_,
        "fieldType": field_type,
        "description": description,
        "groupName": group,
        "options": [dict(o) for o in options],
        "displayOrder": -1,
        "calculated": read_only,
        "externalOptions": False,
        "hasUniqueValue": False,
        "hidden": False,
        "hubspotDefined": hubspot_defined,
        "modificationMetadata": {
            "archivable": not hubspot_defined,
            "readOnlyDefinition": hubspot_defined,
            "readOnlyValue": read_only,
        },
        "formField": not read_only,
        "archived": False,
        "createdAt": stamp,
        "updatedAt": stamp,
    }


def stock_properties(now_ms: int) -> list[dict[str, Any]]:
    """The default deal properties the sandbox knows before any custom property is created."""
    spec: list[tuple[str, str, str, str]] = [
        ("dealname", "Deal Name", "string", "text"),
        ("amount", "Amount", "number", "number"),
        ("dealstage", "Deal Stage", "enumeration", "radio"),
        ("pipeline", "Pipeline", "enumeration", "select"),
        ("closedate", "Close Date", "datetime", "date"),
        ("createdate", "Create Date", "datetime", "date"),
        ("hubspot_owner_id", "Deal owner", "enumeration", "select"),
        ("dealtype", "Deal Type", "enumeration", "radio"),
        ("description", "Deal Description", "string", "textarea"),
        ("closed_lost_reason", "Closed Lost Reason", "string", "textarea"),
        ("closed_won_reason", "Closed Won Reason", "string", "textarea"),
        ("deal_currency_code", "Currency", "enumeration", "select"),
    ]
    defs = [property_definition(n, lbl, t, f, "dealinformation", now_ms) for n, lbl, t, f in spec]
    calculated: list[tuple[str, str, str, str]] = [
        ("hs_object_id", "Record ID", "number", "number"),
        ("hs_lastmodifieddate", "Last Modified Date", "datetime", "date"),
        ("hs_deal_stage_probability", "Deal probability", "number", "number"),
        ("hs_is_closed", "Is Deal Closed?", "bool", "booleancheckbox"),
        ("hs_is_closed_won", "Is closed won", "bool", "booleancheckbox"),
        ("hs_v2_date_entered_current_stage", "Date entered current stage", "datetime", "date"),
    ]
    defs += [
        property_definition(n, lbl, t, f, "dealinformation", now_ms, read_only=True)
        for n, lbl, t, f in calculated
    ]
    return defs


def stage_properties(stage_id: str, stage_label: str, now_ms: int) -> list[dict[str, Any]]:
    """The per-stage history properties HubSpot keeps: date entered and date exited."""
    return [
        property_definition(
            f"hs_date_entered_{stage_id}",
            f"Date entered '{stage_label}'",
            "datetime",
            "date",
            "dealstages",
            now_ms,
            read_only=True,
        ),
        property_definition(
            f"hs_date_exited_{stage_id}",
            f"Date exited '{stage_label}'",
            "datetime",
            "date",
            "dealstages",
            now_ms,
            read_only=True,
        ),
    ]


def stock_groups() -> list[dict[str, Any]]:
    """The default deal property groups."""
    return [
        {"name": "dealinformation", "label": "Deal information", "displayOrder": -1, "archived": False},
        {"name": "dealstages", "label": "Deal stage history", "displayOrder": -1, "archived": False},
    ]
