"""A valid hot reload changes the very next translation of a connector built by the runtime,
without a restart (connectors read the mappings holder, not a snapshot taken when built)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import respx

from sync_worker.canonical import StageKey
from sync_worker.mappings import MappingsHolder
from sync_worker.runtime import build_connectors
from sync_worker.settings import Settings

REPO = Path(__file__).resolve().parents[2]
BASE = "https://acme.pipedrive.com"


def _page(items: list[dict[str, object]]) -> httpx.Response:
    # https://developers.pipedrive.com/docs/api/v2/Stages: {success, data, additional_data.next_cursor}
    return httpx.Response(
        200, json={"success": True, "data": items, "additional_data": {"next_cursor": None}}
    )


@respx.mock
def test_a_reloaded_mapping_is_used_for_the_next_deal_the_connector_translates(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", folder)
    holder = MappingsHolder(folder, interval=60.0)
    settings = Settings(pipedrive={"api_token": "t0k3n", "base_url": BASE})  # type: ignore[arg-type]
    connectors = build_connectors(settings, lambda: holder.current, limiter=lambda _name: None)
    pipedrive = connectors["pipedrive"]
    respx.get(f"{BASE}/api/v2/pipelines").mock(return_value=_page([{"id": 1, "name": "Pipeline"}]))
    respx.get(f"{BASE}/api/v2/stages").mock(
        return_value=_page([{"id": 3, "pipeline_id": 1, "name": "Demo Scheduled", "order_nr": 3}])
    )
    deal = {
        "id": 11,
        "title": "Acme",
        "stage_id": 3,
        "pipeline_id": 1,
        "status": "open",
        "update_time": "2026-12-03T10:00:00Z",
        "add_time": "2026-12-01T10:00:00Z",
    }
    assert pipedrive.to_record(deal).stage is StageKey.MEETING  # type: ignore[attr-defined]

    # When an admin maps "Demo Scheduled" to qualified and the holder picks the edit up
    path = folder / "pipedrive.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace(
            "- name: Demo Scheduled\n        canonical: meeting",
            "- name: Demo Scheduled\n        canonical: qualified",
        ),
        encoding="utf-8",
    )
    assert holder.reload()

    # Then the same connector object translates the next deal with the new mapping
    assert pipedrive.to_record(deal).stage is StageKey.QUALIFIED  # type: ignore[attr-defined]
