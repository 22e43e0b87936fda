"""LaGrowthMachine inbox webhooks at the receiver: the published INBOX_MESSAGE body is stored and
answered 2xx with the token as ``?token=`` or ``X-Sync-Token``; an authenticated body of a shape the
connector does not recognise is answered 2xx too, kept, and listed by ``sync-worker dlq list``."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sync_worker.commands import dlq_group
from tests.receiver.conftest import LGM_SECRET, Harness
from tests.runtime.test_commands import obj

URL = "/webhooks/lagrowthmachine"


def _inbox_message(message_id: str) -> bytes:
    return json.dumps(
        {
            "type": "INBOX_MESSAGE",
            "messageChannel": "EMAIL",
            "lead": {"id": "65a0000000000000000000aa", "linkedinUrl": None, "email": "ava@example.com"},
            "messages": [
                {"id": message_id, "content": "Yes!", "direction": "INCOMING", "createdAt": 1717236000000}
            ],
        }
    ).encode()


def test_published_inbox_message_is_stored_with_the_token_in_query_or_header(harness: Harness) -> None:
    by_query = harness.client.post(f"{URL}?token={LGM_SECRET}", content=_inbox_message("m-1"))
    by_header = harness.client.post(URL, content=_inbox_message("m-2"), headers={"X-Sync-Token": LGM_SECRET})
    assert (by_query.status_code, by_header.status_code) == (200, 200), (by_query.text, by_header.text)
    assert by_query.json()["accepted"] == 1 and by_header.json()["accepted"] == 1
    assert harness.store.inbox_depth() == 2
    # A redelivery of the same message is a duplicate, not a second reply.
    again = harness.client.post(f"{URL}?token={LGM_SECRET}", content=_inbox_message("m-1"))
    assert again.json()["duplicates"] == 1 and harness.store.inbox_depth() == 2


def test_unrecognised_shape_is_2xx_kept_and_listed_by_dlq_list(harness: Harness, tmp_path: Path) -> None:
    body = b'{"type": "LEAD_EVENT", "leadId": "l-9"}'
    response = harness.client.post(f"{URL}?token={LGM_SECRET}", content=body)
    assert response.status_code == 200, response.text
    assert response.json()["unhandled"] == 1
    listed = CliRunner().invoke(dlq_group, ["list"], obj=obj(tmp_path / "store.db"))
    assert listed.exit_code == 0, listed.output
    assert "lagrowthmachine" in listed.output and "unrecognised" in listed.output
    # An unauthenticated body is still refused, and nothing is kept.
    assert harness.client.post(URL, content=body).status_code == 401
    assert len(harness.store.list_dead_letters()) == 1
