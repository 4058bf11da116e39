"""The key `lmtune up` makes on first start: saved 0600 in the data folder, reused, replaced once revoked."""

import stat

from click.testing import CliRunner

from cli.local_key import dashboard_url, ensure_local_key, key_file, read_local_key
from cli.main import main
from lmtune.settings import load_settings
from lmtune.store.database import open_database
from lmtune.store.keys import authenticate, list_keys, revoke_key


def test_the_first_start_saves_a_working_key_readable_by_its_owner_only(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'lmtune.db'}")
    secret, created = ensure_local_key(db, tmp_path)
    assert created and authenticate(db, secret)
    assert stat.S_IMODE(key_file(tmp_path).stat().st_mode) == 0o600
    assert read_local_key(tmp_path) == secret

    assert ensure_local_key(db, tmp_path) == (secret, False)  # later starts reuse it
    assert len(list_keys(db)) == 1


def test_a_revoked_local_key_is_replaced_at_the_next_start(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'lmtune.db'}")
    old, _ = ensure_local_key(db, tmp_path)
    revoke_key(db, authenticate(db, old))
    new, created = ensure_local_key(db, tmp_path)
    assert created and new != old and read_local_key(tmp_path) == new
    assert stat.S_IMODE(key_file(tmp_path).stat().st_mode) == 0o600


def test_the_dashboard_url_carries_the_key_in_its_fragment():
    assert dashboard_url("127.0.0.1", 8000, "lmt-abc") == "http://127.0.0.1:8000/#key=lmt-abc"
    assert dashboard_url("0.0.0.0", 9000, "lmt-abc") == "http://127.0.0.1:9000/#key=lmt-abc"


def test_the_default_data_folder_is_the_same_from_any_working_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("LMTUNE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    monkeypatch.chdir(tmp_path)
    here = load_settings().data_dir
    monkeypatch.chdir("/")
    assert load_settings().data_dir == here == tmp_path / "share" / "lmtune"


def test_keys_commands_name_the_data_folder_and_revoke_by_id(tmp_path):
    runner = CliRunner()
    env = {"LMTUNE_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": ""}
    created = runner.invoke(main, ["keys", "create", "ci"], env=env)
    assert created.exit_code == 0
    assert f"keys of data folder {tmp_path / 'data'}" in created.output
    secret = created.output.strip().splitlines()[-1]
    db = open_database(f"sqlite:///{tmp_path / 'data' / 'lmtune.db'}")
    key_id = authenticate(db, secret)

    listed = runner.invoke(main, ["keys", "list"], env=env)
    assert any(line.split()[:2] == [key_id, "ci"] for line in listed.output.splitlines())
    assert runner.invoke(main, ["keys", "revoke", key_id], env=env).exit_code == 0
    assert authenticate(db, secret) is None
    missing = runner.invoke(main, ["keys", "revoke", key_id], env=env)
    assert missing.exit_code == 1 and f"no key {key_id!r}" in missing.output
