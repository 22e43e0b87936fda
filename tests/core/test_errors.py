"""The error tree: grouping by what the caller does, and mapping issues that say where."""

from __future__ import annotations

from sync_worker.errors import (
    AuthError,
    MappingError,
    MappingIssue,
    PayloadError,
    PayloadTooLargeError,
    PermanentError,
    SignatureError,
    SyncWorkerError,
    TransientError,
    WebhookError,
)


def test_tree_groups_errors_by_action() -> None:
    assert issubclass(AuthError, PermanentError)
    assert issubclass(SignatureError, WebhookError) and SignatureError.status == 401
    assert PayloadError.status == 400 and PayloadTooLargeError.status == 413
    for kind in (TransientError, PermanentError, WebhookError, MappingError):
        assert issubclass(kind, SyncWorkerError)
    assert TransientError("x", retry_after=2.5).retry_after == 2.5


def test_mapping_error_reports_every_issue_with_file_line_key() -> None:
    error = MappingError(
        [
            MappingIssue(
                "mappings/hubspot.yaml", 12, "pipelines[0].stages.closedwon", "unknown canonical key 'wonn'"
            ),
            MappingIssue("mappings/pipedrive.yaml", None, "status", "missing"),
        ]
    )
    text = str(error)
    assert "mappings/hubspot.yaml:12: pipelines[0].stages.closedwon: unknown canonical key 'wonn'" in text
    assert "mappings/pipedrive.yaml: status: missing" in text
    assert (error.file, error.line, error.key) == (
        "mappings/hubspot.yaml",
        12,
        "pipelines[0].stages.closedwon",
    )
