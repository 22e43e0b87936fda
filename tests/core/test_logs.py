"""Logging never carries a secret, whatever logs it."""

from __future__ import annotations

import io
import json
import logging

import pytest

from sync_worker.logs import configure_logging
from sync_worker.settings import Settings


@pytest.fixture
def restore_root() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield  # type: ignore[misc]
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, was in quiet.items():
        logging.getLogger(name).setLevel(was)


@pytest.mark.usefixtures("restore_root")
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_are_masked(fmt: str) -> None:
    settings = Settings(
        log_format=fmt,
        hubspot={"token": "pat-na1-SECRETVALUE"},
        lagrowthmachine={"webhook_secret": "lgm-hook-SECRET"},
    )
    out = io.StringIO()
    configure_logging(settings, stream=out)
    log = logging.getLogger("sync_worker.test")
    log.info("calling with %s", "pat-na1-SECRETVALUE")
    log.info('"POST /webhooks/lagrowthmachine?token=lgm-hook-SECRET HTTP/1.1" 200')
    log.info("GET /flow/campaigns?apikey=abcdef123456&limit=5")
    log.info("header Authorization: Bearer abc.def.ghi")
    try:
        raise ValueError("boom pat-na1-SECRETVALUE")
    except ValueError:
        log.exception("failed")
    text = out.getvalue()
    for secret in ("SECRETVALUE", "lgm-hook-SECRET", "abcdef123456", "abc.def.ghi"):
        assert secret not in text
    assert "apikey=***" in text and "limit=5" in text
    if fmt == "json":
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert lines[0]["logger"] == "sync_worker.test"
        assert lines[0]["message"] == "calling with ***"


def _facts_logged(fmt: str) -> str:
    out = io.StringIO()
    configure_logging(Settings(log_format=fmt, hubspot={"token": "pat-na1-SECRETVALUE"}), stream=out)
    log = logging.getLogger("sync_worker.test")
    log.info("poll done", extra={"source": "hubspot", "stream": "deals", "records": 57, "enqueued": 3})
    log.warning(
        "webhook refused: bad_request",
        extra={"source": "pipedrive", "status": 400, "reason": "data.update_time is missing"},
    )
    log.info("leaked pat-na1-SECRETVALUE", extra={"detail": "token=pat-na1-SECRETVALUE"})
    # uvicorn logs its start-up line with an ANSI-coloured copy of the message
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on %s", "http://127.0.0.1:8000", extra={"color_message": "\x1b[1m%s\x1b[0m"}
    )
    return out.getvalue()


@pytest.mark.usefixtures("restore_root")
def test_text_and_json_lines_carry_the_same_facts_without_escape_codes() -> None:
    text, as_json = _facts_logged("text"), _facts_logged("json")
    records = [json.loads(line) for line in as_json.splitlines()]
    lines = text.splitlines()
    # The facts of each JSON object are on the matching text line
    for record, line in zip(records, lines, strict=True):
        for key, value in record.items():
            if key in ("time", "level", "logger", "message"):
                continue
            assert f" {key}=" in line and str(value) in line, (key, line)
    assert "source=hubspot" in lines[0] and "stream=deals" in lines[0] and "records=57" in lines[0]
    assert 'reason="data.update_time is missing"' in lines[1]
    assert records[1]["reason"] == "data.update_time is missing"
    # No escape code and no secret, in either format
    for out in (text, as_json):
        assert "\x1b" not in out and "\\u001b" not in out and "SECRETVALUE" not in out
    assert "color_message" not in as_json and "color_message" not in text
