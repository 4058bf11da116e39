"""Settings are validated when a process starts: a bad variable is named with its allowed range."""

import pytest
from click.testing import CliRunner

from cli.main import main
from lmtune.settings import SettingsError, load_settings


def test_defaults_put_everything_in_the_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("LMTUNE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'lmtune.db'}"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("LMTUNE_MAX_ATTEMPTS", "abc", "a whole number from 1 to 100"),
        ("LMTUNE_LEASE_SECONDS", "-5", "a number from 1 to 86400"),
    ],
)
def test_a_bad_variable_is_refused_naming_it_and_its_range(monkeypatch, name, value, words):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value).startswith(f"{name}={value}:") and words in str(refused.value)


def test_a_command_started_with_a_bad_variable_says_which_and_exits(monkeypatch, tmp_path):
    monkeypatch.setenv("LMTUNE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LMTUNE_MAX_ATTEMPTS", "0")
    result = CliRunner().invoke(main, ["keys", "create", "me"])
    assert result.exit_code == 1 and "LMTUNE_MAX_ATTEMPTS=0" in result.output and "Traceback" not in result.output
