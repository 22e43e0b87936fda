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
