"""The local key: the secret of one API key kept in a 0600 file in the data folder, so that
`lmtune up` can print a ready-to-use dashboard URL and the terminal client on the same machine
needs no --api-key; beside it, the URL `lmtune up` serves at, so the client needs no --base-url."""

from __future__ import annotations

from pathlib import Path

from lmtune.layout import write_atomically
from lmtune.store.database import Database
from lmtune.store.keys import authenticate, create_key

KEY_FILE = "api-key"
URL_FILE = "api-url"
LOCAL_KEY_NAME = "local"


def key_file(data_dir: Path) -> Path:
    return data_dir / KEY_FILE


def read_local_key(data_dir: Path) -> str | None:
    try:
        return key_file(data_dir).read_text().strip() or None
    except FileNotFoundError:
        return None


def url_file(data_dir: Path) -> Path:
    return data_dir / URL_FILE


def save_local_url(data_dir: Path, url: str) -> None:
    _write_private(url_file(data_dir), url)


def read_local_url(data_dir: Path) -> str | None:
    try:
        return url_file(data_dir).read_text().strip() or None
    except FileNotFoundError:
        return None


def ensure_local_key(db: Database, data_dir: Path) -> tuple[str, bool]:
    """(secret, created): the saved key if it still authenticates, else a new key saved in its place
    (also after the saved one was revoked)."""
    secret = read_local_key(data_dir)
    if secret and authenticate(db, secret):
        return secret, False
    _, secret = create_key(db, LOCAL_KEY_NAME)
    _write_private(key_file(data_dir), secret)
    return secret, True


def _write_private(path: Path, text: str) -> None:
    """Replaces the file at once; created with 0600 from the start, never readable by others, not even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text + "\n", private=True)


def dashboard_url(host: str, port: int, secret: str | None) -> str:
    """The URL to open; the key rides in the fragment, which browsers never send to the server."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    return f"http://{shown}:{port}/" + (f"#key={secret}" if secret else "")
