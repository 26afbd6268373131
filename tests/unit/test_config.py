"""Settings come from one table; a bad value names its variable."""

import pytest

from app.config import ConfigError, defaults, from_env, sqlalchemy_url


def test_environment_values_are_parsed_and_typed():
    found = from_env({"DB_POOL_SIZE": "3", "DATABASE_URL": "postgresql://u@h/db", "UNRELATED": "x"})
    assert found == {"DB_POOL_SIZE": 3, "SQLALCHEMY_DATABASE_URI": "postgresql://u@h/db"}


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DB_POOL_SIZE", "many"), ("DB_POOL_SIZE", "0"), ("MAX_REQUEST_BYTES", "-1"), ("ADMIN_TOKEN", "  "),
     ("DB_RECYCLE_AFTER_TENANTS", "-1"), ("CONSOLE_ENABLED", "maybe"), ("CONSOLE_IDLE_MINUTES", "0"),
     ("SECRET_KEY", "too-short")],
)
def test_a_bad_value_names_the_variable(variable, value):
    with pytest.raises(ConfigError, match=variable):
        from_env({variable: value})


@pytest.mark.parametrize(("value", "parsed"), [("off", None), ("None", None), ("0", 0), ("5", 5)])
def test_prepared_statements_can_be_turned_off(value, parsed):
    assert from_env({"DB_PREPARE_THRESHOLD": value}) == {"DB_PREPARE_THRESHOLD": parsed}


def test_a_bad_prepare_threshold_names_the_variable():
    with pytest.raises(ConfigError, match="DB_PREPARE_THRESHOLD"):
        from_env({"DB_PREPARE_THRESHOLD": "-1"})


def test_defaults_cover_every_setting_and_need_no_environment():
    values = defaults()
    assert values["SQLALCHEMY_DATABASE_URI"] is None
    assert values["MAX_CONTENT_LENGTH"] == 1024 * 1024


@pytest.mark.parametrize(
    "url", ["postgres://u@h/db", "postgresql://u@h/db", "postgresql+psycopg://u@h/db"]
)
def test_urls_always_use_psycopg3(url):
    assert sqlalchemy_url(url) == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(("raw", "parsed"), [("json", "json"), (" JSON ", "json"), ("console", "console")])
def test_log_format_is_console_or_json(raw, parsed):
    assert from_env({"LOG_FORMAT": raw}) == {"LOG_FORMAT": parsed}
    assert defaults()["LOG_FORMAT"] == "console"


def test_a_bad_log_format_names_the_variable():
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        from_env({"LOG_FORMAT": "xml"})


@pytest.mark.parametrize(("raw", "parsed"), [("off", False), ("0", False), ("on", True), ("true", True)])
def test_metrics_can_be_switched_off(raw, parsed):
    assert from_env({"METRICS_ENABLED": raw}) == {"METRICS_ENABLED": parsed}


def test_the_multiprocess_dir_must_exist(tmp_path):
    assert from_env({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}) == {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        from_env({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")})


def test_the_multiprocess_dir_given_as_a_mapping_must_match_the_environment(tmp_path, monkeypatch):
    from app.config import validate

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR must be set in the environment"):
        validate({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    validate({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})


def test_the_console_is_on_by_default_and_can_be_switched_off():
    assert defaults()["CONSOLE_ENABLED"] is True
    assert defaults()["CONSOLE_IDLE_MINUTES"] == 30
    assert from_env({"CONSOLE_ENABLED": "off"}) == {"CONSOLE_ENABLED": False}


def test_a_short_secret_key_is_refused_without_showing_it():
    with pytest.raises(ConfigError) as refused:
        from_env({"SECRET_KEY": "hunter2-hunter2"})
    assert "SECRET_KEY=<hidden>" in str(refused.value) and "hunter2" not in str(refused.value)
    assert from_env({"SECRET_KEY": "k" * 32}) == {"SECRET_KEY": "k" * 32}
