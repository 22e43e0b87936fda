"""The ``crm.lead`` methods of the sandbox, as ``odoo/odoo`` ``addons/crm/models/crm_lead.py`` has them.

- ``action_set_lost(ids, **additional_values)``: ``action_archive`` (``active`` False, probability and
  automated probability 0), then the values (e.g. ``lost_reason_id``); the stage stays as it was.
- ``action_set_won(ids)``: unarchive, the first won stage whose sequence is above the current one
  (else the last won stage below it), probability 100.
- ``action_unarchive(ids)``: restore archived leads, clear ``lost_reason_id``, recompute probability.
- ``message_post(ids, body=..., message_type=..., subtype_xmlid=...)`` (``mail.thread``): one
  record only ("Expected singleton" otherwise); the message id.
"""

from __future__ import annotations

from typing import Any

from connectors.odoo.sandbox.state import Env, OdooError, OdooState, value_error

__all__ = ["CrmState"]


class CrmState(OdooState):
    """:class:`OdooState` with the CRM's lead actions."""

    def m_action_set_lost(self, env: Env, model: str, ids: Any, **additional_values: Any) -> bool:
        rows = self._existing(model, ids)
        extra = self._clean(model, additional_values)
        for row in rows:
            self._apply(env, model, row, {"active": False, "probability": 0.0})
            row["automated_probability"] = 0.0
            self._apply(env, model, row, extra)
        self._changed(model, [r["id"] for r in rows])
        return True

    def m_action_set_won(self, env: Env, model: str, ids: Any) -> bool:
        rows = self._existing(model, ids)
        won = sorted((s["sequence"], s["id"]) for s in self.records["crm.stage"].values() if s.get("is_won"))
        if not won:
            raise OdooError("odoo.exceptions.UserError", "No won stage is defined.", 422)
        for row in rows:
            current = self.records["crm.stage"].get(row.get("stage_id") or 0, {}).get("sequence", 0)
            above = [sid for seq, sid in won if seq > current]
            stage = above[0] if above else won[-1][1]
            self._apply(env, model, row, {"active": True, "stage_id": stage, "probability": 100.0})
        self._changed(model, [r["id"] for r in rows])
        return True

    def m_action_unarchive(self, env: Env, model: str, ids: Any) -> bool:
        rows = [r for r in self._existing(model, ids) if not r.get("active")]
        for row in rows:
            probability = 100.0 if self._stage_won(row.get("stage_id")) else 10.0
            self._apply(
                env, model, row, {"active": True, "lost_reason_id": False, "probability": probability}
            )
        self._changed(model, [r["id"] for r in rows])
        return True

    def m_action_archive(self, env: Env, model: str, ids: Any) -> bool:
        return self.m_action_set_lost(env, model, ids)

    def m_message_post(
        self,
        env: Env,
        model: str,
        ids: Any,
        *,
        body: str = "",
        message_type: str = "notification",
        subtype_xmlid: str | None = None,
        **kwargs: Any,
    ) -> int:
        rows = self._existing(model, ids)
        if len(rows) != 1:
            raise value_error(f"Expected singleton: {model}({', '.join(str(r['id']) for r in rows)})")
        self.messages.append(
            {
                "id": len(self.messages) + 1,
                "res_id": rows[0]["id"],
                "model": model,
                "body": body,
                "message_type": message_type,
                "subtype_xmlid": subtype_xmlid,
                "author_uid": env.uid,
            }
        )
        return len(self.messages)
