"""Chatterwerks: a self-hosted team chat on aiohttp and PostgreSQL."""

import importlib.metadata
from pathlib import Path

__version__ = "0.1.0"


def _base_dir() -> Path:
    """Where sql/, templates/ and static/ are: beside the package in a
    checkout (and an editable install); under <prefix>/share/chatterwerks
    when installed from a wheel (setup.cfg's data_files), found through the
    installed-files record, so any install scheme (--user, --prefix) works."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "sql" / "queries").is_dir():
        return checkout
    try:
        files = importlib.metadata.files("chatterwerks") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.as_posix().endswith("share/chatterwerks/sql/001_schema.sql"):
            return Path(str(file.locate())).resolve().parent.parent
    raise RuntimeError("chatterwerks: sql/, templates/ and static/ are missing; reinstall it")


BASE_DIR = _base_dir()
