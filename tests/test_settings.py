from pathlib import Path

import pytest
from django.core import checks
from django.test import override_settings

from config.env import database_from_url, persistent_secret

pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")


def test_database_url_parses_sqlite_and_postgres(tmp_path):
    base = Path("/srv/shop")
    assert database_from_url("sqlite:///db.sqlite3", base)["NAME"] == base / "db.sqlite3"
    assert database_from_url("sqlite:////var/lib/shop.db", base)["NAME"] == Path("/var/lib/shop.db")
    pg = database_from_url("postgres://shop:p%40ss%2Fword@db.internal:6543/shop_prod?sslmode=require", base)
    assert pg == {"ENGINE": "django.db.backends.postgresql", "NAME": "shop_prod", "USER": "shop",
                  "PASSWORD": "p@ss/word", "HOST": "db.internal", "PORT": "6543", "OPTIONS": {"sslmode": "require"}}
    with pytest.raises(ValueError, match="mysql"):
        database_from_url("mysql://x@y/z", base)


def test_the_generated_secret_is_random_private_and_stable(tmp_path):
    path = tmp_path / "secret_key"
    first = persistent_secret(path)
    assert len(first) >= 50 and persistent_secret(path) == first
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert persistent_secret(tmp_path / "other") != first


def _ids() -> set[str]:
    return {m.id for m in checks.run_checks()}


def test_system_check_warns_about_postgres_without_persistent_connections(settings):
    pg = {"ENGINE": "django.db.backends.postgresql", "NAME": "x", "CONN_MAX_AGE": 0}
    with override_settings(DATABASES={"default": pg}):
        assert "segments.W001" in _ids()
    with override_settings(DATABASES={"default": {**pg, "CONN_MAX_AGE": 600}}):
        assert "segments.W001" not in _ids()


def test_system_check_warns_about_sqlite_without_immediate_transactions():
    lite = {"ENGINE": "django.db.backends.sqlite3", "NAME": "x.db", "OPTIONS": {}}
    with override_settings(DATABASES={"default": lite}):
        assert "segments.W002" in _ids()


def test_system_check_warns_when_retry_does_not_exceed_timeout(settings):
    with override_settings(Q_CLUSTER={**settings.Q_CLUSTER, "timeout": 300, "retry": 300}):
        assert "segments.W003" in _ids()


def test_shipped_settings_pass_every_check():
    assert not {i for i in _ids() if i.startswith("segments.")}


def test_production_checks_flag_missing_webhook_secret_and_pepper(settings):
    settings.SITE_URL = "http://shop.example"
    settings.ANYMAIL = {}
    ids = {m.id for m in checks.run_checks(include_deployment_checks=True)}
    assert {"compliance.W001", "compliance.W002"} <= ids
    settings.SITE_URL = "https://shop.example"
    settings.ANYMAIL = {"WEBHOOK_SECRET": "user:secret"}
    ids = {m.id for m in checks.run_checks(include_deployment_checks=True)}
    assert not {"compliance.W001", "compliance.W002"} & ids
