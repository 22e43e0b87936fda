"""Normalisation benchmark: events per second per core through the mapping layer, one process.

Each connector's pure ``to_canonical`` runs on payloads taken from the providers' documentation (the
connector test fixtures under ``tests/connectors/fixtures/``, whose READMEs cite the pages):

* HubSpot ``POST /crm/v3/objects/deals/search`` results
  (https://developers.hubspot.com/docs/api/crm/search), one deal per event;
* Pipedrive v2 deal object (https://pipedrive.readme.io/docs/pipedrive-api-v2-migration-guide) with
  the stage index built from ``GET /api/v2/stages`` and ``/api/v2/pipelines``
  (https://developers.pipedrive.com/docs/api/v1/Stages), stage and status varied across the stock
  stages;
* LaGrowthMachine lead stats rows and the inbox reply webhook
  (https://documenter.getpostman.com/view/2071164/TVCmSkH2);

plus ``Mappings.to_canonical`` alone (the stage lookup every translation makes). Payloads are
prepared before the clock starts; each scenario runs for ``--seconds`` and reports events/s on one
core (the process is single-threaded; ``time.process_time`` is shown next to wall time).

    PYTHONPATH=. .venv/bin/python bench/normalise.py --seconds 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.hubspot import to_canonical as hubspot_to_canonical
from connectors.lagrowthmachine.convert import to_canonical as lgm_to_canonical
from connectors.pipedrive.convert import stage_from_payload
from connectors.pipedrive.convert import to_canonical as pipedrive_to_canonical
from sync_worker.canonical import UnmappedStage
from sync_worker.mappings import Mappings, load_mappings

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "connectors" / "fixtures"
OBSERVED = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _scenarios(mappings: Mappings) -> dict[str, Callable[[int], object]]:
    """Name -> a function translating the i-th prepared payload (cycled)."""
    hs_results = _fixture("hubspot/deals_search.json")["results"]
    hs_stages = (
        "appointmentscheduled",
        "qualifiedtobuy",
        "presentationscheduled",
        "contractsent",
        "closedwon",
    )
    hubspot = [
        {**deal, "properties": {**deal["properties"], "dealstage": stage}}
        for deal, stage in itertools.product(hs_results[:1], hs_stages)
    ] + hs_results[1:]

    pipelines = _fixture("pipedrive/pipelines_v2.json")["data"]
    names = {str(p["id"]): str(p["name"]) for p in pipelines}
    stages = {
        s.stage_id: s
        for s in (stage_from_payload(raw, names) for raw in _fixture("pipedrive/stages_v2.json")["data"])
    }
    base_deal = _fixture("pipedrive/deal_v2.json")
    pipedrive = [
        {**base_deal, "id": n + 1, "stage_id": int(stage_id), "status": status}
        for n, (stage_id, status) in enumerate(
            itertools.product(sorted(stages), ("open", "open", "won", "lost"))
        )
    ]

    leads = _fixture("lagrowthmachine/statsleads_page1.json")["leads"]
    reply = _fixture("lagrowthmachine/webhook_reply.json")

    lookups = [("hubspot", "default", stage) for stage in hs_stages] + [
        ("pipedrive", s.pipeline_label, s.stage_id) for s in stages.values()
    ]

    def hs(i: int) -> object:
        return hubspot_to_canonical(hubspot[i % len(hubspot)], mappings)

    def pd(i: int) -> object:
        return pipedrive_to_canonical(pipedrive[i % len(pipedrive)], mappings, stages=stages)

    def lead(i: int) -> object:
        return lgm_to_canonical(
            leads[i % len(leads)], mappings, kind="lead", observed_at=OBSERVED, campaign_id="c1"
        )

    def message(i: int) -> object:
        return lgm_to_canonical(reply, mappings, kind="message")

    def lookup(i: int) -> object:
        source, pipeline, stage = lookups[i % len(lookups)]
        if source == "hubspot":
            return mappings.to_canonical(source, pipeline=pipeline, stage=stage)
        stage_info = stages[stage]
        return mappings.to_canonical(
            source,
            pipeline=str(stage_info.pipeline_id),
            stage=stage,
            pipeline_name=pipeline,
            stage_name=stage_info.stage_label,
        )

    return {
        "hubspot deal (search result)": hs,
        "pipedrive deal (v2 object)": pd,
        "lagrowthmachine lead row": lead,
        "lagrowthmachine reply webhook": message,
        "Mappings.to_canonical (lookup only)": lookup,
    }


def _measure(func: Callable[[int], object], seconds: float) -> tuple[int, float, float, int]:
    """(events, wall seconds, CPU seconds, unmapped payloads among the first 200)."""
    unmapped = 0
    for i in range(200):  # warm caches; unmapped stages are part of the documented payloads
        result = func(i)
        if isinstance(result, UnmappedStage) or getattr(result, "unmapped", None) is not None:
            unmapped += 1
    count = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    deadline = wall0 + seconds
    while time.perf_counter() < deadline:
        for i in range(count, count + 500):
            func(i)
        count += 500
    return count, time.perf_counter() - wall0, time.process_time() - cpu0, unmapped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="time per scenario (default 3)")
    args = parser.parse_args(argv)
    print("command:", shlex.join([sys.executable, *sys.argv]))
    mappings = load_mappings(REPO / "mappings")
    total_events = 0
    total_cpu = 0.0
    for name, func in _scenarios(mappings).items():
        count, wall, cpu, unmapped = _measure(func, args.seconds)
        if not name.startswith("Mappings"):
            total_events += count
            total_cpu += cpu
        print(
            f"{name:38} {count:>9} events  {count / wall:>9.0f} events/s wall  "
            f"{count / cpu:>9.0f} events/s/core (CPU)  unmapped payloads {unmapped / 2:.0f} %"
        )
    print(
        f"{'all connector translations':38} {total_events:>9} events  "
        f"{total_events / total_cpu:>9.0f} events/s/core (CPU)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
