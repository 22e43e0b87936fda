"""Stage mappings: the canonical stage model and how each system's stages map onto it.

Admins edit YAML in the mappings directory (``SYNC_MAPPINGS_DIR``; defaults ship in the package):
``canonical.yaml`` plus ``hubspot.yaml``, ``pipedrive.yaml``, ``lagrowthmachine.yaml``, and
``routes.yaml`` (what flows where; ``Mappings.routes``, see :mod:`sync_worker.mappings.routes`).
:func:`load_mappings` validates the whole directory and raises one
:class:`~sync_worker.errors.MappingError` listing every issue (file, line, key);
:class:`MappingsHolder` keeps the last good set and reloads it on change or SIGHUP.

Provider facts the default files follow:

* HubSpot pipelines and stages, the stock ``default`` pipeline:
  https://developers.hubspot.com/docs/api-reference/crm-pipelines-v3/guide and
  https://developers.hubspot.com/docs/methods/pipelines/pipelines_overview
* Pipedrive stages (ids per account) and the deal ``status`` open/won/lost/deleted:
  https://developers.pipedrive.com/docs/api/v1/Stages and
  https://developers.pipedrive.com/docs/api/v1/Deals
* LaGrowthMachine API and lead statuses: https://documenter.getpostman.com/view/2071164/TVCmSkH2
  and https://help.lagrowthmachine.com/en/
"""

from __future__ import annotations

from sync_worker.mappings.loader import load_mappings, validate_directory
from sync_worker.mappings.lookup import Mappings, MappingsSource, TargetStage, mappings_source
from sync_worker.mappings.models import (
    PipelineMapping,
    SourceMapping,
    StageMapping,
    StatusMapping,
    normalise_name,
)
from sync_worker.mappings.reload import MappingsHolder
from sync_worker.mappings.routes import MatchBy, OnDelete, Route, RouteEvent, RouteField, Routes, StageMode
from sync_worker.mappings.schema import schema_documents, write_schemas

__all__ = [
    "Mappings",
    "MappingsHolder",
    "MappingsSource",
    "MatchBy",
    "OnDelete",
    "PipelineMapping",
    "Route",
    "RouteEvent",
    "RouteField",
    "Routes",
    "SourceMapping",
    "StageMapping",
    "StageMode",
    "StatusMapping",
    "TargetStage",
    "load_mappings",
    "mappings_source",
    "normalise_name",
    "schema_documents",
    "validate_directory",
    "write_schemas",
]
