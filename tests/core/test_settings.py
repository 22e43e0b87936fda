"""Settings: the environment contract, masking and errors that name the variable."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from sync_worker.errors import ConfigError
from sync_worker.settings import Settings, default_mappings_dir, describe_settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SYNC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]


def test_defaults_match_the_architecture_contract() -> None:
    settings = Settings()
    assert settings.database_url == "sqlite:///./sync-worker.db"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert str(settings.hubspot.base_url) == "https://api.hubapi.com/"
    assert str(settings.pipedrive.base_url) == "https://api.pipedrive.com/"
    assert str(settings.lagrowthmachine.base_url) == "https://apiv2.lagrowthmachine.com/flow"
    assert settings.public_url is None
    assert not settings.hubspot.enabled and not settings.pipedrive.enabled
    assert not settings.lagrowthmachine.enabled


def test_nested_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_DATABASE_URL", "postgresql://u@db:5432/sync")
    monkeypatch.setenv("SYNC_HUBSPOT__TOKEN", "pat-na1-abcdef")
    monkeypatch.setenv("SYNC_HUBSPOT__CLIENT_SECRET", "hs-secret")
    monkeypatch.setenv("SYNC_PIPEDRIVE__API_TOKEN", "pd-token")
    monkeypatch.setenv("SYNC_PIPEDRIVE__WEBHOOK_USER", "hook")
    monkeypatch.setenv("SYNC_PIPEDRIVE__WEBHOOK_PASSWORD", "hook-pass")
    monkeypatch.setenv("SYNC_LAGROWTHMACHINE__API_KEY", "lgm-key")
    monkeypatch.setenv("SYNC_LAGROWTHMACHINE__WEBHOOK_SECRET", "lgm-secret")
    monkeypatch.setenv("SYNC_PUBLIC_URL", "https://sync.example.com")
    settings = load_settings()
    assert settings.database_url == "postgresql://u@db:5432/sync"
    assert isinstance(settings.hubspot.token, SecretStr)
    assert settings.hubspot.token.get_secret_value() == "pat-na1-abcdef"
    assert settings.pipedrive.webhook_user == "hook"
    assert settings.lagrowthmachine.webhook_secret is not None
    assert settings.hubspot.enabled and settings.pipedrive.enabled and settings.lagrowthmachine.enabled
    assert "pat-na1-abcdef" not in repr(settings)
    assert str(settings.public_url) == "https://sync.example.com/"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SYNC_HUBSPOT__BASE_URL", "not a url"),
        ("SYNC_POLL_INTERVAL_SECONDS", "-5"),
        ("SYNC_DATABASE_URL", "mysql://x"),
        ("SYNC_REDIS_URL", "localhost:6379"),
        ("SYNC_WEBHOOK_MAX_BYTES", "0"),
        ("SYNC_PUBLIC_URL", "sync.example.com"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert name in str(info.value)


def test_describe_masks_every_secret() -> None:
    settings = Settings(
        hubspot={"token": "tok-123456", "client_secret": "cs-123456"},
        pipedrive={"api_token": "pd-123456", "webhook_password": "pw-123456"},
    )
    rows = describe_settings(settings)
    assert rows["SYNC_HUBSPOT__TOKEN"] == "********"
    assert rows["SYNC_PIPEDRIVE__WEBHOOK_PASSWORD"] == "********"
    assert rows["SYNC_LAGROWTHMACHINE__API_KEY"] == ""
    text = "\n".join(f"{k}={v}" for k, v in rows.items())
    for secret in ("tok-123456", "cs-123456", "pd-123456", "pw-123456"):
        assert secret not in text


def test_mappings_dir_falls_back_to_packaged_defaults(tmp_path: pytest.TempPathFactory) -> None:
    settings = Settings()
    assert settings.resolved_mappings_dir() == default_mappings_dir()
    assert (default_mappings_dir() / "canonical.yaml").is_file()


def test_local_mappings_dir_wins_when_present(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    Path("mappings").mkdir()
    Path("mappings/canonical.yaml").write_text("stages: []\n")
    assert Settings().resolved_mappings_dir() == Path("mappings")


@pytest.mark.parametrize("value", ['["pipedrive", "zoho"]', "pipedrive, zoho"])
def test_a_list_setting_of_a_connector_reads_json_or_commas(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SYNC_HUBSPOT__LINK_SYSTEMS", value)
    assert Settings().section("hubspot").link_systems == ("pipedrive", "zoho")


def test_a_list_setting_given_as_broken_json_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_HUBSPOT__LINK_SYSTEMS", '["pipedrive"')
    with pytest.raises(ConfigError, match="LINK_SYSTEMS"):
        load_settings()
