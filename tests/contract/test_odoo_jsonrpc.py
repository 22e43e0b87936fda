"""The contract suite once more for Odoo, on its other transport: JSON-RPC ``execute_kw`` (Odoo 17).

The registry's run (``test_contract.py``) starts the spec's default sandbox, Odoo 19, where the
connector detects JSON-2. Here the same tests run against a sandbox of Odoo 17, which speaks only
JSON-RPC, with the connector built the way the runtime builds it (``SPEC.build``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from connectors.odoo import SPEC
from connectors.odoo.sandbox import start_sandbox
from sync_worker.mappings import Mappings
from sync_worker.plugins import BuildContext
from tests.contract.test_contract import (  # noqa: F401 - collected here, with this module's subject
    _OPTIONS,
    Subject,
    mappings,
    settings_for,
    test_5xx_and_429_go_through_the_shared_boundary,
    test_a_genuine_webhook_is_accepted_and_a_forged_one_refused,
    test_a_malformed_body_is_a_payload_error,
    test_applied_updates_show_on_the_next_pull,
    test_its_default_mapping_translates_both_ways,
    test_lists_its_stages,
    test_pulls_to_the_end_then_resumes_from_the_cursor,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def subject(mappings: Mappings) -> Iterator[Subject]:  # noqa: F811 - this module's subject
    sandbox = start_sandbox(_OPTIONS, version=17)
    try:
        settings = settings_for(SPEC, sandbox.env())
        ctx = BuildContext(
            section=settings.section(SPEC.name),
            settings=settings,
            mappings=lambda: mappings,
            limiter=None,
            clock=lambda: datetime.now(UTC),
        )
        connector = SPEC.build(ctx)
        try:
            assert getattr(connector, "transport", None) == "jsonrpc"
            yield Subject(SPEC, sandbox, connector, mappings)
        finally:
            connector.close()
    finally:
        sandbox.stop()
